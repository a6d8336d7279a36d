package sigchain

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// fullChain builds a chain using every link type.
func fullChain(t testing.TB) *builder {
	alice := testIdentity(t, aliceWords)
	b := newBuilder(t, alice, "alice@kez.lat")
	gh := b.add(TypeAddClaim, AddClaimBody("github", "alice", "https://gist.github.com/alice/1"))
	b.add(TypeSetEncryptionKey, SetEncryptionKeyBody(alice.EncryptionKey(1).PublicKey(), 1))
	b.add(TypeRevokeClaim, RevokeClaimBody(gh.ID()))
	b.add(TypeSetSharedFiles, []byte(`{"files":[]}`))
	b.add("x_ext", []byte(`{}`), IgnoreIfUnsupported())
	return b
}

func parseAll(bs [][]byte) ([]*Link, error) {
	var out []*Link
	for _, b := range bs {
		l, err := ParseLink(b)
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, nil
}

func verifyBytes(bs [][]byte) error {
	links, err := parseAll(bs)
	if err != nil {
		return err
	}
	_, err = Verify(links, fixedClock(vectorNow))
	return err
}

func TestStateOfFullChain(t *testing.T) {
	b := fullChain(t)
	st, err := Verify(b.links, fixedClock(vectorNow))
	if err != nil {
		t.Fatal(err)
	}
	alice := b.id
	if st.Key() != alice.PublicKey() || st.Seqno() != 6 || st.Head() != b.links[5].ID() {
		t.Fatalf("key/seqno/head: %s %d %s", st.Key(), st.Seqno(), st.Head())
	}
	if !bytes.Equal(st.EncryptionKey().Bytes(), alice.EncryptionKey(1).PublicKey().Bytes()) || st.EncryptionGeneration() != 1 {
		t.Fatal("encryption key not rotated")
	}
	if st.Handle() != "alice@kez.lat" || len(st.Claims()) != 0 {
		t.Fatalf("handle %q claims %v", st.Handle(), st.Claims())
	}
	if string(st.SharedFiles()) != `{"files":[]}` || st.SharedFilesSeqno() != 5 {
		t.Fatalf("shared files %s at %d", st.SharedFiles(), st.SharedFilesSeqno())
	}
	if !st.Ctime().Equal(b.links[5].Ctime()) {
		t.Fatal("ctime")
	}
	// Extending in two steps gives the same state as verifying at once.
	first, err := Verify(b.links[:2], fixedClock(vectorNow))
	if err != nil {
		t.Fatal(err)
	}
	claims := first.Claims()
	ext, err := first.Extend(b.links[1:], fixedClock(vectorNow)) // a leading copy of the head is skipped
	if err != nil {
		t.Fatal(err)
	}
	if ext.Pin() != st.Pin() || len(ext.Claims()) != 0 {
		t.Fatal("Extend differs from Verify")
	}
	if len(first.Claims()) != 1 || first.Claims()[0] != claims[0] {
		t.Fatal("Extend changed the state it extended")
	}
}

// TestTamperAnyByte changes every byte of every link and expects the chain
// to be rejected each time. The links before the tampered one are verified
// once; each tampered chain is then checked from there on.
func TestTamperAnyByte(t *testing.T) {
	b := fullChain(t)
	orig := bytesOf(b.links)
	if err := verifyBytes(orig); err != nil {
		t.Fatal(err)
	}
	prefix := make([]*State, len(orig)) // prefix[i]: state after links[:i]
	for i := 1; i < len(orig); i++ {
		st, err := Verify(b.links[:i], fixedClock(vectorNow))
		if err != nil {
			t.Fatal(err)
		}
		prefix[i] = st
	}
	for i := range orig {
		for j := range orig[i] {
			for _, x := range []byte{0x01, 0x20} {
				l := bytes.Clone(orig[i])
				l[j] ^= x
				tampered, err := ParseLink(l)
				if err != nil {
					continue // rejected by the decoder
				}
				chain := append([]*Link{tampered}, b.links[i+1:]...)
				if _, err := prefix[i].Extend(chain, fixedClock(vectorNow)); err == nil {
					t.Fatalf("link %d byte %d xor %#x: tampered chain accepted", i+1, j, x)
				}
			}
		}
	}
}

func TestSwapDropDuplicate(t *testing.T) {
	b := fullChain(t)
	ls := b.links
	cases := map[string][]*Link{
		"swap 2,3":      {ls[0], ls[2], ls[1], ls[3]},
		"drop 1":        ls[1:],
		"drop 3":        {ls[0], ls[1], ls[3]},
		"duplicate 2":   {ls[0], ls[1], ls[1], ls[2]},
		"duplicate 1":   {ls[0], ls[0], ls[1]},
		"reverse":       {ls[2], ls[1], ls[0]},
		"empty":         {},
		"eldest twice":  {ls[0], ls[0]},
		"last is first": {ls[5]},
	}
	for name, chain := range cases {
		_, err := Verify(chain, fixedClock(vectorNow))
		if !errors.Is(err, ErrBrokenChain) || !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: got %v, want ErrBrokenChain", name, err)
		}
	}
}

// forkOf builds a second version of b's chain that shares its first n
// links and then diverges.
func forkOf(t *testing.T, b *builder, n int) []*Link {
	st, err := Verify(b.links[:n], fixedClock(vectorNow))
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewLink(b.id, st, TypeSetHandle, SetHandleBody("evil@kez.lat"), b.links[n-1].Ctime())
	if err != nil {
		t.Fatal(err)
	}
	return append(append([]*Link(nil), b.links[:n]...), l)
}

func TestForkAndRollback(t *testing.T) {
	b := fullChain(t)
	pinned, err := Verify(b.links[:4], fixedClock(vectorNow))
	if err != nil {
		t.Fatal(err)
	}
	pin := pinned.Pin()

	// The same chain, grown: fine.
	if err := CheckAgainst(pin, b.links); err != nil {
		t.Fatalf("grown chain: %v", err)
	}
	if err := CheckAgainst(pin, b.links[3:]); err != nil {
		t.Fatalf("links from the pinned seqno: %v", err)
	}
	// Rollback: shorter, or nothing.
	for _, short := range [][]*Link{b.links[:3], b.links[:1], nil} {
		err := CheckAgainst(pin, short)
		if !errors.Is(err, ErrRollback) || errors.Is(err, ErrFork) {
			t.Fatalf("%d links: got %v, want only ErrRollback", len(short), err)
		}
	}
	// Fork: a different link 4, even on a longer, valid chain.
	forked := forkOf(t, b, 3)
	if _, err := Verify(forked, fixedClock(vectorNow)); err != nil {
		t.Fatalf("the fork is a valid chain on its own: %v", err)
	}
	err = CheckAgainst(pin, forked)
	if !errors.Is(err, ErrFork) || errors.Is(err, ErrRollback) {
		t.Fatalf("fork: got %v, want only ErrFork", err)
	}
	if _, err := pinned.Extend(forked[3:], fixedClock(vectorNow)); !errors.Is(err, ErrFork) {
		t.Fatalf("Extend with a different head link: got %v, want ErrFork", err)
	}
	// Another key's chain is a fork too.
	mal := newBuilder(t, testIdentity(t, malWords), "")
	if err := CheckAgainst(pin, mal.links); !errors.Is(err, ErrFork) {
		t.Fatalf("other key: got %v, want ErrFork", err)
	}
	// Links that start after the pinned head cannot be compared.
	if err := CheckAgainst(pin, b.links[4:]); err == nil || errors.Is(err, ErrFork) || errors.Is(err, ErrRollback) {
		t.Fatalf("links after the pin: got %v", err)
	}
	// Pins survive JSON.
	j, err := json.Marshal(pin)
	if err != nil {
		t.Fatal(err)
	}
	var back Pin
	if err := json.Unmarshal(j, &back); err != nil || back != pin {
		t.Fatalf("pin JSON %s: %v %v", j, back, err)
	}
}

func TestExtendRejectsBrokenLinks(t *testing.T) {
	b := fullChain(t)
	st, err := Verify(b.links[:2], fixedClock(vectorNow))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Extend(b.links[3:], fixedClock(vectorNow)); !errors.Is(err, ErrBrokenChain) {
		t.Fatalf("gap: %v", err)
	}
	var le *LinkError
	if _, err := st.Extend(b.links[2:4], fixedClock(vectorNow)); err != nil {
		t.Fatal(err)
	}
	// A link from another identity's chain.
	mal := newBuilder(t, testIdentity(t, malWords), "")
	mal.add(TypeSetHandle, SetHandleBody("m@kez.lat"))
	mal.add(TypeSetHandle, SetHandleBody(""))
	_, err = st.Extend(mal.links[2:3], fixedClock(vectorNow))
	if !errors.As(err, &le) || !errors.Is(err, ErrBrokenChain) {
		t.Fatalf("foreign link: %v", err)
	}
}

func TestCtimeClock(t *testing.T) {
	alice := testIdentity(t, aliceWords)
	now := time.Unix(vectorNow, 0)
	st, err := Verify(newBuilder(t, alice, "").links, fixedClock(vectorNow))
	if err != nil {
		t.Fatal(err)
	}
	future, err := NewLink(alice, st, TypeSetHandle, SetHandleBody("a@kez.lat"), now.Add(9*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Extend([]*Link{future}, fixedClock(vectorNow)); err != nil {
		t.Fatalf("9 minutes ahead: %v", err)
	}
	far, err := NewLink(alice, st, TypeSetHandle, SetHandleBody("a@kez.lat"), now.Add(11*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Extend([]*Link{far}, fixedClock(vectorNow)); !errors.Is(err, ErrBadCtime) {
		t.Fatalf("11 minutes ahead: %v", err)
	}
	if _, err := st.Extend([]*Link{far}, fixedClock(vectorNow), WithMaxFuture(time.Hour)); err != nil {
		t.Fatalf("with a larger window: %v", err)
	}
	if _, err := st.Extend([]*Link{far}, WithClock(func() time.Time { return now.Add(2 * time.Minute) })); err != nil {
		t.Fatalf("with a later clock: %v", err)
	}
	if _, err := NewLink(alice, st, TypeSetHandle, SetHandleBody("a@kez.lat"), now.Add(-3*time.Hour)); !errors.Is(err, ErrBadCtime) {
		t.Fatalf("NewLink with a ctime before the head: %v", err)
	}
}

func TestNewLinkRefusesInvalid(t *testing.T) {
	alice := testIdentity(t, aliceWords)
	mal := testIdentity(t, malWords)
	b := newBuilder(t, alice, "alice@kez.lat")
	at := atTime(vectorNow)
	cases := []struct {
		name string
		err  error
		make func() (*Link, error)
	}{
		{"eldest not first", ErrBrokenChain, func() (*Link, error) {
			return NewLink(alice, b.st, TypeEldest, EldestBody(alice.PublicKey(), alice.EncryptionKey(0).PublicKey(), 0, ""), at)
		}},
		{"first not eldest", ErrBrokenChain, func() (*Link, error) { return NewLink(alice, nil, TypeSetHandle, SetHandleBody(""), at) }},
		{"other signer", ErrWrongKey, func() (*Link, error) { return NewLink(mal, b.st, TypeSetHandle, SetHandleBody(""), at) }},
		{"bad handle", ErrBadBody, func() (*Link, error) { return NewLink(alice, b.st, TypeSetHandle, SetHandleBody("no-at-sign"), at) }},
		{"nil encryption key", ErrBadBody, func() (*Link, error) {
			return NewLink(alice, b.st, TypeSetEncryptionKey, SetEncryptionKeyBody(nil, 3), at)
		}},
		{"unknown type", ErrUnsupported, func() (*Link, error) { return NewLink(alice, b.st, "x_new", []byte(`{}`), at) }},
		{"bad type name", nil, func() (*Link, error) { return NewLink(alice, b.st, "Bad-Type", []byte(`{}`), at) }},
		{"body not an object", nil, func() (*Link, error) { return NewLink(alice, b.st, "x_new", []byte(`[1]`), at, IgnoreIfUnsupported()) }},
		{"float in body", nil, func() (*Link, error) {
			return NewLink(alice, b.st, TypeSetSharedFiles, []byte(`{"size":1.5}`), at)
		}},
		{"manifest too large", ErrTooLarge, func() (*Link, error) {
			return NewLink(alice, b.st, TypeSetSharedFiles, []byte(`{"a":"`+strings.Repeat("x", MaxSharedFilesBodySize)+`"}`), at)
		}},
		{"revoke of nothing", ErrBadBody, func() (*Link, error) {
			return NewLink(alice, b.st, TypeRevokeClaim, RevokeClaimBody(b.links[0].ID()), at)
		}},
	}
	for _, c := range cases {
		l, err := c.make()
		if err == nil || l != nil {
			t.Errorf("%s: built a link", c.name)
			continue
		}
		if c.err != nil && !errors.Is(err, c.err) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.err)
		}
	}
	// Non-canonical input JSON is canonicalized, not refused.
	l, err := NewLink(alice, b.st, TypeSetSharedFiles, []byte(" {\"z\": 1, \"a\": [true, null, \"<&>\"]}\n"), at)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(l.Body()); got != `{"a":[true,null,"\u003c\u0026\u003e"],"z":1}` {
		t.Fatalf("body %s", got)
	}
}

func TestLinkAccessors(t *testing.T) {
	b := fullChain(t)
	l := b.links[1]
	if l.Version() != 1 || l.Seqno() != 2 || l.Prev() != b.links[0].ID() || b.links[0].Prev().Defined() {
		t.Fatal("version/seqno/prev")
	}
	if l.Key() != b.id.PublicKey() || l.Type() != TypeAddClaim || l.IgnoreIfUnsupported() || !b.links[5].IgnoreIfUnsupported() {
		t.Fatal("key/type/ignore")
	}
	if err := b.id.PublicKey().Verify("kez/v1 sigchain link", l.SignedPayload(), l.Signature()); err != nil {
		t.Fatalf("the signature covers SignedPayload under the link context: %v", err)
	}
	id, err := ParseID(l.ID().String())
	if err != nil || id != l.ID() || !strings.HasPrefix(l.ID().String(), "bafkrei") {
		t.Fatalf("ID %s: %v", l.ID(), err)
	}
	// Links embed in JSON unchanged and come back strictly.
	doc, err := json.Marshal(map[string]any{"links": b.links})
	if err != nil {
		t.Fatal(err)
	}
	var back struct{ Links []*Link }
	if err := json.Unmarshal(doc, &back); err != nil {
		t.Fatal(err)
	}
	for i := range back.Links {
		if !bytes.Equal(back.Links[i].Bytes(), b.links[i].Bytes()) {
			t.Fatalf("link %d changed through encoding/json", i+1)
		}
	}
	if !strings.Contains(l.String(), "add_claim") {
		t.Fatal(l.String())
	}
}

func TestCanonicalize(t *testing.T) {
	ok := map[string]string{
		`{}`:                                 `{}`,
		` { "b" : 1 , "a" : [ ] } `:          `{"a":[],"b":1}`,
		`{"s":"\u0041\/\u00e9\ud83d\ude00"}`: `{"s":"A/é😀"}`,
		`{"s":"<\u2028\b\u0001"}`:            `{"s":"\u003c\u2028\b\u0001"}`,
		`{"n":-9007199254740991}`:            `{"n":-9007199254740991}`,
		`{"é":1,"z":2,"a":3}`:                `{"a":3,"z":2,"é":1}`,
	}
	for in, want := range ok {
		got, err := Canonicalize([]byte(in))
		if err != nil || string(got) != want {
			t.Errorf("Canonicalize(%s) = %s, %v; want %s", in, got, err, want)
			continue
		}
		if err := checkCanonicalObject(got); err != nil {
			t.Errorf("output %s is not canonical: %v", got, err)
		}
	}
	for _, in := range []string{`[]`, `"x"`, `{"a":1.0}`, `{"a":1e3}`, `{"a":9007199254740992}`, `{"a":1,"a":2}`, `{} {}`, "{\"a\":\"\xff\"}", `{`,
		strings.Repeat(`{"a":`, 17) + `1` + strings.Repeat(`}`, 17)} {
		if got, err := Canonicalize([]byte(in)); err == nil {
			t.Errorf("Canonicalize(%s) = %s, want an error", in, got)
		}
	}
}
