package group

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/kez"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors from the generator")

const vectorDir = "testdata/vectors"

// vector is one test vector file (docs/spec/group.md §8). Each entry of
// Links is a link's exact bytes: the JSON object itself, or a string of
// hex for bytes that are not JSON.
type vector struct {
	Name        string            `json:"name"`
	Description string            `json:"description"`
	Now         int64             `json:"now"`
	Devices     []vectorDevice    `json:"devices,omitempty"`
	Links       []json.RawMessage `json:"links"`
	Expect      *vectorState      `json:"expect,omitempty"`
	Error       string            `json:"error,omitempty"`
}

// vectorDevice is what the device checker knows: device is a device of
// person, revoked at revoked_at (0: not revoked).
type vectorDevice struct {
	Person    string `json:"person"`
	Device    string `json:"device"`
	RevokedAt int64  `json:"revoked_at"`
}

type vectorState struct {
	Name    string         `json:"name"`
	Title   string         `json:"title"`
	ID      string         `json:"id"`
	Seqno   uint64         `json:"seqno"`
	Head    string         `json:"head"`
	Epoch   uint64         `json:"epoch"`
	Owner   string         `json:"owner"`
	Members []vectorMember `json:"members"`
	Removed []string       `json:"removed"`
}

type vectorMember struct {
	Key    string `json:"key"`
	Handle string `json:"handle"`
	Role   Role   `json:"role"`
	Since  uint64 `json:"since"`
}

// errorKinds maps a fail vector's "error" to the sentinel it must match.
var errorKinds = map[string]error{
	"malformed":          ErrMalformed,
	"bad_signature":      ErrBadSignature,
	"broken_chain":       ErrBrokenChain,
	"bad_ctime":          ErrBadCtime,
	"not_allowed":        ErrNotAllowed,
	"not_member":         ErrNotMember,
	"already_member":     ErrAlreadyMember,
	"too_many_members":   ErrTooManyMembers,
	"device_not_allowed": ErrDeviceNotAllowed,
}

func stateOf(s *State) *vectorState {
	id := s.ID()
	vs := &vectorState{Name: s.Name(), Title: s.Title(), ID: hex.EncodeToString(id[:]), Seqno: s.Seqno(),
		Head: s.Head().String(), Epoch: s.Epoch(), Owner: s.Owner().String(), Removed: []string{}}
	for _, m := range s.Members() {
		vs.Members = append(vs.Members, vectorMember{m.Key.String(), m.Handle, m.Role, m.Since})
	}
	for _, k := range s.Removed() {
		vs.Removed = append(vs.Removed, k.String())
	}
	return vs
}

// checker answers from the vector's device table, with the rule of
// ChainDeviceChecker.
func (v *vector) checker() DeviceChecker {
	return func(_ context.Context, person, device kez.PublicKey, at time.Time) error {
		for _, d := range v.Devices {
			if d.Person == person.String() && d.Device == device.String() {
				if d.RevokedAt != 0 && d.RevokedAt <= at.Unix() {
					return fmt.Errorf("%w: revoked at %d", ErrDeviceNotAllowed, d.RevokedAt)
				}
				return nil
			}
		}
		return fmt.Errorf("%w: not a device of %s", ErrDeviceNotAllowed, person)
	}
}

func (v *vector) linkBytes(t testing.TB) [][]byte {
	var out [][]byte
	for i, raw := range v.Links {
		if len(raw) > 0 && raw[0] == '"' {
			var h string
			if err := json.Unmarshal(raw, &h); err != nil {
				t.Fatalf("%s: link %d: %v", v.Name, i, err)
			}
			b, err := hex.DecodeString(h)
			if err != nil {
				t.Fatalf("%s: link %d: %v", v.Name, i, err)
			}
			out = append(out, b)
			continue
		}
		out = append(out, []byte(raw))
	}
	return out
}

func (v *vector) run(t testing.TB) (*State, error) {
	return Verify(context.Background(), v.linkBytes(t), v.checker(), fixedClock(v.Now))
}

func readVectors(t testing.TB) []*vector {
	files, err := filepath.Glob(filepath.Join(vectorDir, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no vectors in %s: %v", vectorDir, err)
	}
	var vs []*vector
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var v vector
		if err := json.Unmarshal(data, &v); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if v.Name+".json" != filepath.Base(f) {
			t.Errorf("%s: name %q does not match the file name", f, v.Name)
		}
		vs = append(vs, &v)
	}
	return vs
}

func TestVectors(t *testing.T) {
	if *update {
		writeVectors(t, generateVectors(t))
	}
	spec, err := os.ReadFile("../docs/spec/group.md")
	if err != nil {
		t.Fatal(err)
	}
	var valid, fail int
	for _, v := range readVectors(t) {
		if !bytes.Contains(spec, []byte("`"+v.Name+"`")) {
			t.Errorf("docs/spec/group.md does not name vector %s", v.Name)
		}
		t.Run(v.Name, func(t *testing.T) {
			st, err := v.run(t)
			switch {
			case strings.HasPrefix(v.Name, "valid_"):
				valid++
				if err != nil {
					t.Fatalf("valid vector rejected: %v", err)
				}
				got, _ := json.Marshal(stateOf(st))
				want, _ := json.Marshal(v.Expect)
				if !bytes.Equal(got, want) {
					t.Fatalf("state:\n got %s\nwant %s", got, want)
				}
				// The group ID is the digest in the create link's ID.
				first, _ := ParseLink(v.linkBytes(t)[0])
				if d, _ := digestOf(first.ID()); hex.EncodeToString(d[:]) != v.Expect.ID {
					t.Fatal("the group ID is not the create link's digest")
				}
			case strings.HasPrefix(v.Name, "fail_"):
				fail++
				kind, ok := errorKinds[v.Error]
				if !ok {
					t.Fatalf("unknown error kind %q", v.Error)
				}
				if !errors.Is(err, kind) || !errors.Is(err, ErrInvalid) {
					t.Fatalf("error %v does not match %s", err, v.Error)
				}
			default:
				t.Fatal("vector names start with valid_ or fail_")
			}
		})
	}
	if valid == 0 || fail == 0 {
		t.Fatalf("%d valid and %d fail vectors; want some of each", valid, fail)
	}
}

// TestVectorsReproducible checks that the generator still makes exactly
// the files: signatures are deterministic, so any drift is a format change.
func TestVectorsReproducible(t *testing.T) {
	for _, v := range generateVectors(t) {
		got := encodeVector(t, v)
		want, err := os.ReadFile(filepath.Join(vectorDir, v.Name+".json"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from the generator; run go test ./group -run TestVectors -update", v.Name)
		}
	}
}

func entry1(b []byte) json.RawMessage {
	if json.Valid(b) && len(bytes.TrimSpace(b)) == len(b) {
		return json.RawMessage(bytes.Clone(b))
	}
	s, _ := json.Marshal(hex.EncodeToString(b))
	return s
}

// generateVectors builds every vector from the fixed identities.
func generateVectors(t *testing.T) []*vector {
	c := newCast(t)
	ak, bk, ck, dk := c.alice.PublicKey(), c.bob.PublicKey(), c.carol.PublicKey(), c.dave.PublicKey()
	var vs []*vector
	raw := func(links [][]byte) []json.RawMessage {
		out := make([]json.RawMessage, len(links))
		for i, l := range links {
			out[i] = entry1(l)
		}
		return out
	}
	devices := []vectorDevice{
		{Person: ak.String(), Device: c.aliceDev.PublicKey().String()},
		{Person: ak.String(), Device: c.aliceOld.PublicKey().String(), RevokedAt: oldDeviceRevoked},
	}
	valid := func(name, desc string, links [][]byte, devs []vectorDevice) {
		v := &vector{Name: name, Description: desc, Now: vectorNow, Devices: devs, Links: raw(links)}
		st, err := v.run(t)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		v.Expect = stateOf(st)
		vs = append(vs, v)
	}
	fail := func(name, desc, kind string, links [][]byte, devs []vectorDevice) {
		v := &vector{Name: name, Description: desc, Now: vectorNow, Devices: devs, Links: raw(links), Error: kind}
		if _, err := v.run(t); !errors.Is(err, errorKinds[kind]) {
			t.Fatalf("%s: %v, want %s", name, err, kind)
		}
		vs = append(vs, v)
	}
	with := func(ch *chain, b []byte) [][]byte { return append(ch.links[:len(ch.links):len(ch.links)], b) }

	cr := newChain(t, c.alice, "Friends")
	valid("valid_create", "alice (seed 0x01…) creates friends@kez.lat, titled Friends.", cr.links, nil)

	// The whole life of a group.
	lc := newChain(t, c.alice, "Friends")
	ms := members(c.bob, c.carol, c.dave)
	ms[0].Role = RoleAdmin
	lc.add(c.alice, ak, TypeAdd, AddBody(ms))
	lc.add(c.alice, ak, TypeRole, RoleBody(ck, RoleAdmin))
	lc.add(c.bob, bk, TypeTitle, TitleBody("Friends & family <3"))
	lc.add(c.bob, bk, TypeRemove, RemoveBody(dk))
	lc.add(c.carol, ck, TypeRemove, RemoveBody(ck))
	lc.add(c.alice, ak, TypeRole, RoleBody(bk, RoleOwner))
	valid("valid_lifecycle", "create; alice adds bob (admin), carol and dave; makes carol an admin; bob renames; bob removes dave; carol leaves; alice hands ownership to bob.", lc.links, nil)

	dv := team(t, c)
	dv.add(c.aliceDev, ak, TypeTitle, TitleBody("from the laptop"))
	dv.add(c.aliceOld, ak, TypeTitle, TitleBody("from the old phone, before its revocation"))
	valid("valid_device", "links by alice signed by her devices 0x11 (current) and 0x12 (revoked after the link).", dv.links, devices)

	tm := team(t, c)
	fail("fail_member_adds", "carol, a member, adds mal.", "not_allowed",
		with(tm, tm.next(c.carol, ck, TypeAdd, AddBody(members(c.mal)))), nil)
	mal := members(c.mal)
	mal[0].Role = RoleAdmin
	fail("fail_admin_adds_admin", "bob, an admin, adds mal as an admin.", "not_allowed",
		with(tm, tm.next(c.bob, bk, TypeAdd, AddBody(mal))), nil)
	fail("fail_admin_removes_owner", "bob, an admin, removes alice, the owner.", "not_allowed",
		with(tm, tm.next(c.bob, bk, TypeRemove, RemoveBody(ak))), nil)
	fail("fail_owner_leaves", "alice, the owner, leaves.", "not_allowed",
		with(tm, tm.next(c.alice, ak, TypeRemove, RemoveBody(ak))), nil)
	fail("fail_already_member", "alice adds carol, who is a member.", "already_member",
		with(tm, tm.next(c.alice, ak, TypeAdd, AddBody(members(c.carol)))), nil)
	dup := `{"members":[` + entry(t, "mal", c.mal.PublicKey().String(), "member") + `,` + entry(t, "mal", c.mal.PublicKey().String(), "member") + `]}`
	fail("fail_duplicate_member", "one add names mal twice.", "malformed",
		with(tm, tm.next(c.alice, ak, TypeAdd, []byte(dup))), nil)

	ra := team(t, c)
	ra.add(c.alice, ak, TypeRemove, RemoveBody(bk))
	fail("fail_removed_admin_signs", "bob, an admin, is removed, then adds mal.", "not_member",
		with(ra, ra.next(c.bob, bk, TypeAdd, AddBody(members(c.mal)))), nil)

	fail("fail_device_not_of_by", "a link for alice signed by mal's key, not one of her devices.", "device_not_allowed",
		with(tm, tm.next(c.mal, ak, TypeTitle, TitleBody("mine"))), devices)
	rv := team(t, c)
	rv.ctime = oldDeviceRevoked
	fail("fail_revoked_device", "a link for alice signed by device 0x12 at the second it was revoked.", "device_not_allowed",
		with(rv, rv.next(c.aliceOld, ak, TypeTitle, TitleBody("late"))), devices)

	good := tm.next(c.alice, ak, TypeTitle, TitleBody("x"))
	fail("fail_bad_signature", "a title link with one bit of its signature flipped.", "bad_signature",
		with(tm, flipSig(t, good)), nil)
	l, err := ParseLink(good)
	if err != nil {
		t.Fatal(err)
	}
	sig, _ := c.alice.Sign(kez.ContextSigchainLink, l.SignedPayload())
	fail("fail_other_context", "a title link signed under the sigchain context (kez/v1 sigchain link).", "bad_signature",
		with(tm, appendSig(bytes.Clone(good[:l.sigStart]), sig)), nil)
	fail("fail_not_canonical", "a title link with a space after a colon (re-signed).", "malformed",
		with(tm, resign(t, c.alice, good, `"title":"x"`, `"title": "x"`)), nil)
	head := tm.st.head
	var zero [32]byte
	fail("fail_seqno_gap", "link 4 follows link 2.", "broken_chain",
		with(tm, rawLink(t, c.alice, testGroup, 4, &head, tm.ctime, ak, TypeTitle, TitleBody("x"))), nil)
	fail("fail_prev_mismatch", "link 3 names a prev of 32 zero bytes.", "broken_chain",
		with(tm, rawLink(t, c.alice, testGroup, 3, &zero, tm.ctime, ak, TypeTitle, TitleBody("x"))), nil)

	big := newChain(t, c.alice, "Big")
	for n := 1; n < MaxMembers; {
		var ms []NewMember
		for ; len(ms) < MaxMembersPerLink && n < MaxMembers; n++ {
			ms = append(ms, NewMember{Key: memberKey(t, n), Handle: "m" + strconv.Itoa(n) + "@kez.lat", Role: RoleMember})
		}
		big.add(c.alice, ak, TypeAdd, AddBody(ms))
	}
	fail("fail_too_many_members", "alice and 1,023 members (seeds SHA-512(\"kez group vector member \" || n), n = 1…1023); then alice adds mal, the 1,025th.", "too_many_members",
		with(big, big.next(c.alice, ak, TypeAdd, AddBody(members(c.mal)))), nil)
	return vs
}

func encodeVector(t *testing.T, v *vector) []byte {
	var b bytes.Buffer
	q := func(s string) string { j, _ := json.Marshal(s); return string(j) }
	b.WriteString("{\n")
	b.WriteString(`  "name": ` + q(v.Name) + ",\n")
	b.WriteString(`  "description": ` + q(v.Description) + ",\n")
	b.WriteString(`  "now": ` + strconv.FormatInt(v.Now, 10) + ",\n")
	if len(v.Devices) > 0 {
		d, err := json.MarshalIndent(v.Devices, "  ", "  ")
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(`  "devices": `)
		b.Write(d)
		b.WriteString(",\n")
	}
	b.WriteString(`  "links": [`)
	for i, l := range v.Links {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString("\n    ")
		b.Write(l)
	}
	b.WriteString("\n  ]")
	if v.Expect != nil {
		e, err := json.MarshalIndent(v.Expect, "  ", "  ")
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(",\n  \"expect\": ")
		b.Write(e)
	}
	if v.Error != "" {
		b.WriteString(",\n  \"error\": " + q(v.Error))
	}
	b.WriteString("\n}\n")
	if !json.Valid(b.Bytes()) {
		t.Fatalf("%s: generated invalid JSON", v.Name)
	}
	return b.Bytes()
}

// writeVectors replaces the vector files with vs.
func writeVectors(t *testing.T, vs []*vector) {
	old, _ := filepath.Glob(filepath.Join(vectorDir, "*.json"))
	for _, f := range old {
		os.Remove(f)
	}
	for _, v := range vs {
		if err := os.WriteFile(filepath.Join(vectorDir, v.Name+".json"), encodeVector(t, v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
