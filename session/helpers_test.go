package session

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/vectorid"
	"github.com/kez-lat/kez-chat/kez"
)

// t0 is the clock of the tests.
var t0 = time.Date(2026, 5, 4, 12, 30, 15, 123_000_000, time.UTC)

// seededReader is a deterministic byte stream for test randomness
// (SHA-256 in counter mode over a label).
type seededReader struct {
	label string
	ctr   uint64
	buf   []byte
}

func newSeeded(label string) *seededReader { return &seededReader{label: label} }

func (r *seededReader) Read(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if len(r.buf) == 0 {
			h := sha256.New()
			h.Write([]byte(r.label))
			h.Write(binary.BigEndian.AppendUint64(nil, r.ctr))
			r.ctr++
			r.buf = h.Sum(nil)
		}
		c := copy(p, r.buf)
		p, r.buf = p[c:], r.buf[c:]
	}
	return n, nil
}

// testPrekey makes a prekey of id with a fixed seed.
func testPrekey(tb testing.TB, id *kez.Identity, prekeyID uint32) *PrekeyPrivate {
	tb.Helper()
	k, err := NewPrekey(newSeeded("prekey "+id.PublicKey().String()+string(rune(prekeyID))), id, prekeyID, t0.Add(-time.Hour), 14*24*time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// lookupOf returns a prekey lookup that knows exactly keys.
func lookupOf(keys ...*PrekeyPrivate) func(uint32) (*PrekeyPrivate, bool) {
	return func(id uint32) (*PrekeyPrivate, bool) {
		for _, k := range keys {
			if k.Public.ID == id {
				return k, true
			}
		}
		return nil, false
	}
}

// pair is an established test conversation.
type pair struct {
	tb         testing.TB
	alice, bob *kez.Identity
	prekey     *PrekeyPrivate
	a, b       *Session
	rnd        *seededReader
}

// newPair starts a session from alice to bob; bob has not accepted yet.
func newPair(tb testing.TB) *pair {
	tb.Helper()
	p := &pair{tb: tb, alice: vectorid.Identity(tb, "alice"), bob: vectorid.Identity(tb, "bob"), rnd: newSeeded(tb.Name())}
	p.prekey = testPrekey(tb, p.bob, 7)
	a, err := Initiate(p.rnd, p.alice, &p.prekey.Public, t0)
	if err != nil {
		tb.Fatal(err)
	}
	p.a = a
	return p
}

// establish makes alice's first message, has bob accept it and answer, and
// alice open the answer.
func (p *pair) establish() {
	p.tb.Helper()
	hs := p.seal(p.a, "hello")
	b, pt, err := Accept(p.bob, hs, lookupOf(p.prekey), t0)
	if err != nil {
		p.tb.Fatalf("Accept: %v", err)
	}
	if string(pt) != "hello" {
		p.tb.Fatalf("Accept gave %q", pt)
	}
	p.b = b
	p.open(p.a, p.seal(p.b, "hi"), "hi")
}

func (p *pair) seal(s *Session, msg string) []byte {
	p.tb.Helper()
	env, err := s.Seal(p.rnd, []byte(msg))
	if err != nil {
		p.tb.Fatalf("Seal: %v", err)
	}
	return env
}

func (p *pair) open(s *Session, env []byte, want string) {
	p.tb.Helper()
	got, err := s.Open(env, t0)
	if err != nil {
		p.tb.Fatalf("Open: %v", err)
	}
	if string(got) != want {
		p.tb.Fatalf("Open gave %q, want %q", got, want)
	}
}

// state returns s's stored form.
func state(tb testing.TB, s *Session) []byte {
	tb.Helper()
	b, err := s.MarshalBinary()
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// refuse checks that s refuses env with want and stays unchanged.
func refuse(tb testing.TB, s *Session, env []byte, now time.Time, want error) {
	tb.Helper()
	before := state(tb, s)
	pt, err := s.Open(env, now)
	if !errors.Is(err, want) || pt != nil {
		tb.Fatalf("Open: got %q, %v; want %v", pt, err, want)
	}
	if !bytes.Equal(before, state(tb, s)) {
		tb.Fatalf("a refused Open (%v) changed the state", err)
	}
}
