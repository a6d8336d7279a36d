package session

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"
)

// The fuzz targets start from the spec vectors: the transcript's envelopes
// and states, and every fail_ vector.

// sentinels are the errors a refusal must wrap one of.
var sentinels = []error{ErrMalformed, ErrUnsupportedVersion, ErrWrongRecipient, ErrWrongSender, ErrWrongSession,
	ErrUnknownPrekey, ErrBadSignature, ErrDecrypt, ErrReplay, ErrTooFarAhead, ErrTooLarge, ErrWrongGroup, ErrOlderThanKey}

func isSentinel(err error) bool {
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// fuzzSeeds adds every envelope of the vectors to f and returns the
// transcript and its envelopes.
func fuzzSeeds(f *testing.F) (*transcript, [][]byte) {
	vf := loadVectors(f)
	tr := replay(f, vf)
	var envs [][]byte
	for _, m := range vf.Messages {
		env, _ := hex.DecodeString(m.Envelope)
		envs = append(envs, env)
		f.Add(env)
	}
	for _, fl := range vf.Failures {
		env, _ := hex.DecodeString(fl.Envelope)
		f.Add(env)
	}
	return tr, envs
}

func FuzzParseHeader(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHeader(b)
		if err != nil {
			if !isSentinel(err) {
				t.Fatalf("an error that is none of the sentinels: %v", err)
			}
			return
		}
		if h.Version != 2 || (h.Type != TypeHandshake && h.Type != TypeMessage) || len(b) > MaxEnvelopeSize {
			t.Fatalf("accepted %+v from %d bytes", h, len(b))
		}
		if h.Type == TypeHandshake {
			sum := sha256.Sum256(b[:hybridSuite.prefixLen()])
			if !bytes.Equal(h.SessionID[:], sum[:sidLen]) {
				t.Fatal("a handshake's session ID is not its prefix's hash")
			}
		}
	})
}

// FuzzOpen opens anything in alice's session as it is before she received
// bob's replies: only bob's real replies may open.
func FuzzOpen(f *testing.F) {
	tr, envs := fuzzSeeds(f)
	st := tr.states[6]["alice"]
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSession(st)
		if err != nil {
			t.Fatal(err)
		}
		pt, err := s.Open(b, tr.now)
		if err != nil {
			if pt != nil || !isSentinel(err) {
				t.Fatalf("refused with %q, %v", pt, err)
			}
			if !bytes.Equal(state(t, s), st) {
				t.Fatalf("a refused Open (%v) changed the state", err)
			}
			return
		}
		for _, i := range []int{2, 3, 4} {
			if bytes.Equal(b, envs[i]) {
				return
			}
		}
		t.Fatalf("opened an envelope bob did not send: %x", b)
	})
}

// FuzzAccept accepts anything as bob with his prekey: only alice's two
// handshakes may open.
func FuzzAccept(f *testing.F) {
	tr, envs := fuzzSeeds(f)
	bob := tr.ids["bob"]
	f.Fuzz(func(t *testing.T, b []byte) {
		s, pt, err := Accept(bob, b, lookupOf(tr.prekey), tr.now)
		if err != nil {
			if s != nil || pt != nil || !isSentinel(err) {
				t.Fatalf("refused with %v, %q, %v", s, pt, err)
			}
			return
		}
		if !bytes.Equal(b, envs[0]) && !bytes.Equal(b, envs[1]) {
			t.Fatalf("accepted a handshake alice did not send: %x", b)
		}
	})
}

// FuzzParseSession parses stored states: what parses marshals back to the
// same bytes, and can be used without panicking.
func FuzzParseSession(f *testing.F) {
	tr, envs := fuzzSeeds(f)
	for _, snap := range tr.states {
		for _, b := range snap {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSession(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("an error other than ErrMalformed: %v", err)
			}
			return
		}
		if got := state(t, s); !bytes.Equal(got, b) {
			t.Fatalf("parsed and marshalled again:\n%x\nfrom\n%x", got, b)
		}
		for _, env := range envs {
			s.Open(env, tr.now)
		}
		s.Seal(newSeeded("fuzz"), []byte("after a fuzzed state"))
	})
}
