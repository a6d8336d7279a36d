package files

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/files/format"
	"github.com/kez-lat/kez-chat/kez"
	ma "github.com/multiformats/go-multiaddr"
)

var update = flag.Bool("update", false, "rewrite the test vectors under testdata/")

// The ticket vectors of docs/spec/ticket.md: owner is seed 0x01, bob (a
// stranger) 0x02, the serving device 0x04, the relay 0x06; now is
// 2026-01-01T00:00:00Z.

const (
	ticketVectorsPath = "testdata/ticket_vectors.json"
	ticketSpecPath    = "../docs/spec/ticket.md"
	ticketVectorNow   = 1767225600
	seedRelay         = 0x06
)

type ticketVector struct {
	Name string `json:"name"`
	// Ticket is the text; Hex its binary form where it has one.
	Ticket string `json:"ticket"`
	Hex    string `json:"hex,omitempty"`
	// Expect is "ok", "malformed", "signature" or "expired".
	Expect  string        `json:"expect"`
	Fields  *ticketFields `json:"fields,omitempty"` // what an "ok" ticket decodes to
	Comment string        `json:"comment,omitempty"`
}

type ticketFields struct {
	Private   bool     `json:"private"`
	Owner     string   `json:"owner"`
	Device    string   `json:"device"`
	CID       string   `json:"cid"`
	Size      int64    `json:"size"`
	Expires   int64    `json:"expires"`
	Name      string   `json:"name"`
	SigServer string   `json:"sig_server"`
	Addrs     []string `json:"addrs"`
}

type ticketVectors struct {
	Comment string         `json:"comment"`
	Now     int64          `json:"now"`
	Vectors []ticketVector `json:"vectors"`
}

func testID(t testing.TB, seed byte) *kez.Identity {
	t.Helper()
	id, err := kez.FromSeed(bytes.Repeat([]byte{seed}, 64))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func mustMultiaddrs(t testing.TB, ss ...string) []ma.Multiaddr {
	t.Helper()
	var out []ma.Multiaddr
	for _, s := range ss {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

func fieldsOf(t *Ticket) *ticketFields {
	f := &ticketFields{Private: t.Private, Owner: t.Owner.String(), Device: t.Device.String(), CID: t.CID.String(), Size: t.Size,
		Expires: t.Expires.Unix(), Name: t.Name, SigServer: t.SigServer, Addrs: []string{}}
	for _, a := range t.Addrs {
		f.Addrs = append(f.Addrs, a.String())
	}
	return f
}

// signRaw signs t's body with signer whatever the rules say, so that
// vectors can break one rule at a time.
func signRaw(t testing.TB, signer *kez.Identity, tk *Ticket) []byte {
	t.Helper()
	b := appendTicketBody(nil, tk)
	sig, err := signer.Sign(kez.ContextTicket, b)
	if err != nil {
		t.Fatal(err)
	}
	return append(b, sig...)
}

// vectorTickets are the three valid tickets of the vectors.
func vectorTickets(t testing.TB) (public, private, circuit *Ticket) {
	owner, dev, relay := testID(t, seedOwner), testID(t, seedDave), testID(t, seedRelay)
	exp := time.Unix(ticketVectorNow+7*24*3600, 0).UTC()
	public = &Ticket{Owner: owner.PublicKey(), Device: owner.PublicKey(), CID: treeOf(t, pattern(300000)).CID(), Size: 300000,
		Expires: exp, Name: "notes.txt", SigServer: "https://sig.kez.lat",
		Addrs: mustMultiaddrs(t, "/ip4/192.0.2.1/tcp/4001", "/ip4/192.0.2.1/udp/4001/quic-v1")}
	encSize := format.EncryptedSize(300000)
	private = &Ticket{Private: true, Owner: owner.PublicKey(), Device: dev.PublicKey(), CID: treeOf(t, pattern(encSize)).CID(), Size: encSize,
		Expires: exp, SigServer: "https://sig.kez.lat", Addrs: mustMultiaddrs(t, "/ip4/192.0.2.1/tcp/4001")}
	circuit = &Ticket{Owner: owner.PublicKey(), Device: dev.PublicKey(), CID: public.CID, Size: 300000, Expires: exp, Name: "notes.txt",
		SigServer: "https://sig.kez.lat",
		Addrs:     mustMultiaddrs(t, "/ip4/192.0.2.1/tcp/4001", "/ip4/198.51.100.7/udp/4002/quic-v1/p2p/"+relay.PublicKey().PeerID().String()+"/p2p-circuit")}
	return public, private, circuit
}

// buildTicketVectors makes the vectors from the code; ed25519 signatures
// are deterministic, so the bytes are stable.
func buildTicketVectors(t testing.TB) ticketVectors {
	owner, bob := testID(t, seedOwner), testID(t, seedBob)
	public, private, circuit := vectorTickets(t)
	v := ticketVectors{
		Comment: "KEZ file tickets, see docs/spec/ticket.md. Identities are kez.FromSeed(64 bytes of V): owner 0x01, bob 0x02, device 0x04, relay 0x06. Parse every ticket at now (Unix seconds).",
		Now:     ticketVectorNow,
	}
	add := func(name, expect, comment string, b []byte) {
		v.Vectors = append(v.Vectors, ticketVector{Name: name, Ticket: encodeTicket(b), Hex: hex.EncodeToString(b), Expect: expect, Comment: comment})
	}
	ok := func(name string, tk *Ticket) []byte {
		b := signRaw(t, owner, tk)
		v.Vectors = append(v.Vectors, ticketVector{Name: name, Ticket: encodeTicket(b), Hex: hex.EncodeToString(b), Expect: "ok", Fields: fieldsOf(tk)})
		return b
	}
	pb := ok("valid_public", public)
	ok("valid_private", private)
	ok("valid_circuit", circuit)

	changed := func(f func(*Ticket)) *Ticket {
		c := *public
		f(&c)
		return &c
	}
	add("fail_expired", "expired", "expires at now", signRaw(t, owner, changed(func(c *Ticket) { c.Expires = time.Unix(ticketVectorNow, 0) })))
	add("fail_expires_too_far", "malformed", "expires 400 days after now", signRaw(t, owner, changed(func(c *Ticket) { c.Expires = time.Unix(ticketVectorNow+400*24*3600, 0) })))

	// One byte changed in each field of valid_public, after signing.
	nameAt := ticketHeadLen + 1 + len(public.CID.Bytes()) + 16
	urlAt := nameAt + 1 + len(public.Name)
	countAt := urlAt + 1 + len(public.SigServer)
	tamper := []struct {
		field  string
		at     int
		xor    byte
		expect string
	}{
		{"magic", 0, 0x01, "malformed"},
		{"version", 4, 0x03, "malformed"},
		{"flags", 5, 0x02, "malformed"},
		{"owner", 6, 0x01, "signature"},
		{"device", 38, 0x01, "signature"},
		{"cid", ticketHeadLen + len(public.CID.Bytes()), 0x01, "signature"},
		{"size", nameAt - 9, 0x01, "signature"},
		{"expires", nameAt - 1, 0x01, "signature"},
		{"name", nameAt + 1, 0x01, "signature"},
		{"sig_server", urlAt + 9, 0x01, "signature"},
		{"addr_count", countAt, 0x03, "malformed"},
		{"addr", countAt + 1 + 8, 0x01, "signature"},
		{"signature", len(pb) - 1, 0x01, "signature"},
	}
	for _, tm := range tamper {
		b := bytes.Clone(pb)
		b[tm.at] ^= tm.xor
		add("fail_tampered_"+tm.field, tm.expect, "valid_public with one byte of its "+tm.field+" changed", b)
	}
	add("fail_tampered_private_flag", "malformed", "valid_public with its private flag set: a private ticket names no file",
		func() []byte { b := bytes.Clone(pb); b[5] |= ticketFlagPriv; return b }())
	add("fail_wrong_signer", "signature", "valid_public signed by bob", signRaw(t, bob, public))
	add("fail_truncated", "malformed", "valid_public without its last byte", pb[:len(pb)-1])
	add("fail_extended", "malformed", "valid_public with a byte after its signature", append(bytes.Clone(pb), 0))
	add("fail_too_many_addresses", "malformed", "17 addresses", signRaw(t, owner, changed(func(c *Ticket) {
		c.Addrs = nil
		for i := range 17 {
			c.Addrs = append(c.Addrs, mustMultiaddrs(t, "/ip4/192.0.2.1/tcp/"+strconv.Itoa(4001+i))...)
		}
	})))
	add("fail_bad_address_peer", "malformed", "an address that names a peer outside a circuit", signRaw(t, owner, changed(func(c *Ticket) {
		c.Addrs = mustMultiaddrs(t, "/ip4/192.0.2.1/tcp/4001/p2p/"+bob.PublicKey().PeerID().String())
	})))
	add("fail_bad_address_circuit_not_last", "malformed", "a circuit address that goes on after /p2p-circuit", signRaw(t, owner, changed(func(c *Ticket) {
		c.Addrs = mustMultiaddrs(t, "/ip4/198.51.100.7/tcp/4002/p2p/"+bob.PublicKey().PeerID().String()+"/p2p-circuit/ip4/192.0.2.1/tcp/1")
	})))
	add("fail_bad_address_bytes", "malformed", "an address that is not a multiaddr", signRaw(t, owner, changed(func(c *Ticket) {
		c.Addrs = []ma.Multiaddr{ma.Multiaddr{}}
	})))
	add("fail_device_without_sig_server", "malformed", "a device other than the owner's key and no sig-server", signRaw(t, owner, changed(func(c *Ticket) {
		c.Device, c.SigServer = circuit.Device, ""
	})))
	add("fail_bad_sig_server", "malformed", "a sig-server URL with a user", signRaw(t, owner, changed(func(c *Ticket) {
		c.SigServer = "https://user@sig.kez.lat"
	})))
	add("fail_name_control", "malformed", "a name with a control character", signRaw(t, owner, changed(func(c *Ticket) { c.Name = "notes\x1b[2J.txt" })))

	text := encodeTicket(pb)
	body := strings.TrimPrefix(text, TicketPrefix)
	texts := []struct{ name, text, comment string }{
		{"fail_wrong_prefix", "kezt2" + body, "another version's prefix"},
		{"fail_upper_case", strings.ToUpper(text), "the text in upper case"},
		{"fail_bad_base32", text[:20] + "1" + text[21:], "a character outside the base32 alphabet"},
		{"fail_base32_not_canonical", body2(text), "the last character carries bits that are not zero"},
		{"fail_padding", text + "=", "base32 padding"},
		{"fail_empty", TicketPrefix, "the prefix alone"},
	}
	for _, x := range texts {
		v.Vectors = append(v.Vectors, ticketVector{Name: x.name, Ticket: x.text, Expect: "malformed", Comment: x.comment})
	}
	return v
}

// body2 changes the unused low bits of a ticket text's last character.
func body2(text string) string {
	last := strings.IndexByte("abcdefghijklmnopqrstuvwxyz234567", text[len(text)-1])
	return text[:len(text)-1] + string("abcdefghijklmnopqrstuvwxyz234567"[last^1])
}

func loadTicketVectors(t testing.TB) ticketVectors {
	t.Helper()
	b, err := os.ReadFile(ticketVectorsPath)
	if err != nil {
		t.Fatal(err)
	}
	var v ticketVectors
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestTicketVectorsUpToDate(t *testing.T) {
	want := buildTicketVectors(t)
	if *update {
		b, _ := json.MarshalIndent(want, "", "  ")
		if err := os.WriteFile(ticketVectorsPath, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got := loadTicketVectors(t)
	wb, _ := json.Marshal(want)
	gb, _ := json.Marshal(got)
	if !bytes.Equal(wb, gb) {
		t.Fatalf("%s is not what the code makes; run go test ./files -run TestTicketVectorsUpToDate -update", ticketVectorsPath)
	}
}

func TestTicketVectors(t *testing.T) {
	v := loadTicketVectors(t)
	now := time.Unix(v.Now, 0)
	want := map[string]error{"malformed": ErrTicketMalformed, "signature": ErrTicketSignature, "expired": ErrTicketExpired}
	for _, tv := range v.Vectors {
		tk, err := ParseTicket(tv.Ticket, now)
		if tv.Expect == "ok" {
			if err != nil {
				t.Errorf("%s: %v", tv.Name, err)
				continue
			}
			gb, _ := json.Marshal(fieldsOf(tk))
			wb, _ := json.Marshal(tv.Fields)
			if !bytes.Equal(gb, wb) {
				t.Errorf("%s: decoded %s, want %s", tv.Name, gb, wb)
			}
			continue
		}
		if tk != nil || !errors.Is(err, want[tv.Expect]) {
			t.Errorf("%s: got %v, want %s", tv.Name, err, tv.Expect)
		}
		for name, e := range want {
			if name != tv.Expect && errors.Is(err, e) {
				t.Errorf("%s: %v is also %s", tv.Name, err, name)
			}
		}
	}
}

// The example on docs/spec/ticket.md is valid_public, and parses to what
// the page says.
func TestTicketSpecExample(t *testing.T) {
	page, err := os.ReadFile(ticketSpecPath)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^(kezt1[a-z2-7]+)$`).FindSubmatch(page)
	if m == nil {
		t.Fatalf("%s shows no ticket", ticketSpecPath)
	}
	v := loadTicketVectors(t)
	if string(m[1]) != v.Vectors[0].Ticket {
		t.Fatalf("the ticket on %s is not valid_public of %s", ticketSpecPath, ticketVectorsPath)
	}
	tk, err := ParseTicket(string(m[1]), time.Unix(v.Now, 0))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{tk.Owner.String(), tk.CID.String(), tk.Name, tk.SigServer, tk.Addrs[0].String(), tk.Addrs[1].String(),
		tk.Expires.Format(time.RFC3339)} {
		if !bytes.Contains(page, []byte(want)) {
			t.Errorf("%s does not show the example's %s", ticketSpecPath, want)
		}
	}
}

// SignTicket refuses what ParseTicket would refuse, and another key.
func TestSignTicketRefuses(t *testing.T) {
	owner, bob := testID(t, seedOwner), testID(t, seedBob)
	public, _, _ := vectorTickets(t)
	if _, err := SignTicket(bob, public); !errors.Is(err, ErrTicketMalformed) {
		t.Fatalf("signed for another key: %v", err)
	}
	for name, f := range map[string]func(*Ticket){
		"no addresses":    func(c *Ticket) { c.Addrs = nil },
		"private named":   func(c *Ticket) { c.Private = true },
		"bad name":        func(c *Ticket) { c.Name = "../x" },
		"negative size":   func(c *Ticket) { c.Size = -1 },
		"zero expiry":     func(c *Ticket) { c.Expires = time.Unix(0, 0) },
		"ftp sig-server":  func(c *Ticket) { c.SigServer = "ftp://sig.kez.lat" },
		"query in URL":    func(c *Ticket) { c.SigServer = "https://sig.kez.lat/?x=1" },
		"undefined CID":   func(c *Ticket) { c.CID = cid.Undef },
		"nil address":     func(c *Ticket) { c.Addrs = []ma.Multiaddr{nil} },
		"zero device key": func(c *Ticket) { c.Device = kez.PublicKey{} },
	} {
		c := *public
		f(&c)
		if s, err := SignTicket(owner, &c); !errors.Is(err, ErrTicketMalformed) {
			t.Errorf("%s: signed (%q, %v)", name, s, err)
		}
	}
	s, err := SignTicket(owner, public)
	if err != nil {
		t.Fatal(err)
	}
	if s != loadTicketVectors(t).Vectors[0].Ticket {
		t.Fatal("SignTicket does not make valid_public")
	}
	// The limits docs/spec/ticket.md gives.
	if MaxTicketSize != 4824 || MaxTicketLen != 7724 {
		t.Fatalf("MaxTicketSize %d, MaxTicketLen %d: update docs/spec/ticket.md", MaxTicketSize, MaxTicketLen)
	}
}

// FuzzParseTicket: no input panics; whatever parses is within the limits
// and re-encodes to the text it came from.
func FuzzParseTicket(f *testing.F) {
	for _, tv := range buildTicketVectors(f).Vectors {
		f.Add(tv.Ticket)
	}
	now := time.Unix(ticketVectorNow, 0)
	f.Fuzz(func(t *testing.T, s string) {
		tk, err := ParseTicket(s, now)
		if err != nil {
			if tk != nil {
				t.Fatal("a ticket and an error")
			}
			return
		}
		checkParsed(t, tk)
		b, _ := ticketEncoding.DecodeString(strings.TrimPrefix(s, TicketPrefix))
		if !bytes.Equal(appendTicketBody(nil, tk), b[:len(b)-ticketSigLen]) {
			t.Fatal("a parsed ticket does not re-encode to its bytes")
		}
	})
}

// FuzzParseTicketBytes fuzzes the binary form under the text encoding,
// which the text fuzzer reaches only slowly.
func FuzzParseTicketBytes(f *testing.F) {
	for _, tv := range buildTicketVectors(f).Vectors {
		if b, err := hex.DecodeString(tv.Hex); err == nil && len(b) > 0 {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		tk, err := parseTicketBytes(b)
		if err != nil {
			return
		}
		checkParsed(t, tk)
		if !bytes.Equal(appendTicketBody(nil, tk), b[:len(b)-ticketSigLen]) {
			t.Fatal("a parsed ticket does not re-encode to its bytes")
		}
	})
}

func checkParsed(t *testing.T, tk *Ticket) {
	t.Helper()
	if err := tk.check(); err != nil {
		t.Fatalf("parsed, yet check says %v", err)
	}
	if len(tk.Addrs) > MaxTicketAddrs || len(tk.Name) > format.MaxNameLen || len(tk.SigServer) > MaxTicketURLLen {
		t.Fatal("over a limit")
	}
}
