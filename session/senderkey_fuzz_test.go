package session

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
)

// The sender key fuzz targets start from the sender key vectors: the
// distribution, the envelopes, the stored forms and every fail_ vector.

// skFuzz is what the targets share: the vectors' distribution, envelopes
// and plaintexts.
type skFuzz struct {
	dist  *SenderKeyDistribution
	envs  [][]byte
	texts []string
}

func skFuzzSeeds(f *testing.F) *skFuzz {
	vf := loadSenderKeyVectors(f)
	d, err := ParseSenderKeyDistribution(unhex(f, "distribution", vf.Distribution))
	if err != nil {
		f.Fatal(err)
	}
	s := &skFuzz{dist: d}
	for _, m := range vf.Messages {
		s.envs = append(s.envs, unhex(f, "envelope", m.Envelope))
		s.texts = append(s.texts, m.Plaintext)
	}
	for _, b := range s.envs {
		f.Add(b)
	}
	for _, fl := range vf.Failures {
		f.Add(unhex(f, fl.Name, fl.Envelope))
	}
	for _, b := range []string{vf.Distribution, vf.SenderKey, vf.ReceiverKey} {
		f.Add(unhex(f, "state", b))
	}
	// A receiver key with skipped keys: after message 5 alone.
	r := NewReceiverKey(d)
	if _, err := r.Open(s.envs[2]); err != nil {
		f.Fatal(err)
	}
	b, _ := r.MarshalBinary()
	f.Add(b)
	return s
}

func FuzzParseGroupHeader(f *testing.F) {
	skFuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseGroupHeader(b)
		if err != nil {
			if !isSentinel(err) {
				t.Fatalf("an error that is none of the sentinels: %v", err)
			}
			return
		}
		if len(b) < groupMinLen || len(b) > MaxEnvelopeSize {
			t.Fatalf("accepted %d bytes", len(b))
		}
		if got := appendGroupHeader(nil, &h.GID, h.Epoch, h.Device, h.Iteration); !bytes.Equal(got, b[:GroupHeaderLen]) {
			t.Fatalf("the header %+v is not the bytes %x", h, b[:GroupHeaderLen])
		}
	})
}

func FuzzParseSenderKeyDistribution(f *testing.F) {
	s := skFuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseSenderKeyDistribution(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupportedVersion) {
				t.Fatalf("an error other than ErrMalformed: %v", err)
			}
			return
		}
		if got, _ := d.MarshalBinary(); !bytes.Equal(got, b) {
			t.Fatalf("parsed and marshalled again:\n%x\nfrom\n%x", got, b)
		}
		r := NewReceiverKey(d)
		for _, env := range s.envs {
			r.Open(env)
		}
	})
}

func FuzzParseSenderKey(f *testing.F) {
	skFuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := ParseSenderKey(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupportedVersion) {
				t.Fatalf("an error other than ErrMalformed: %v", err)
			}
			return
		}
		if got, _ := k.MarshalBinary(); !bytes.Equal(got, b) {
			t.Fatalf("parsed and marshalled again:\n%x\nfrom\n%x", got, b)
		}
		r := NewReceiverKey(k.Distribution())
		env, err := k.Seal([]byte("after a fuzzed state"))
		if err != nil {
			return // exhausted
		}
		if pt, err := r.Open(env); err != nil || string(pt) != "after a fuzzed state" {
			t.Fatalf("a parsed sender key's message does not open: %v", err)
		}
	})
}

func FuzzParseReceiverKey(f *testing.F) {
	s := skFuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseReceiverKey(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupportedVersion) {
				t.Fatalf("an error other than ErrMalformed: %v", err)
			}
			return
		}
		if got, _ := r.MarshalBinary(); !bytes.Equal(got, b) {
			t.Fatalf("parsed and marshalled again:\n%x\nfrom\n%x", got, b)
		}
		for _, env := range s.envs {
			r.Open(env)
		}
		if len(r.skipped) > MaxSenderKeySkip {
			t.Fatalf("%d skipped keys", len(r.skipped))
		}
	})
}

// FuzzOpenGroup opens anything with the vectors' receiver key fresh from
// the distribution: only the sender's three envelopes may open, to their
// plaintexts, and a refusal leaves the key as it was.
func FuzzOpenGroup(f *testing.F) {
	s := skFuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		r := NewReceiverKey(s.dist)
		before, _ := r.MarshalBinary()
		pt, err := r.Open(b)
		if err != nil {
			if pt != nil || !isSentinel(err) {
				t.Fatalf("refused with %q, %v", pt, err)
			}
			if after, _ := r.MarshalBinary(); !bytes.Equal(before, after) {
				t.Fatalf("a refused Open (%v) changed the key", err)
			}
			return
		}
		for i, env := range s.envs {
			if bytes.Equal(b, env) {
				if string(pt) != s.texts[i] {
					t.Fatalf("message %d opened to %q", i, pt)
				}
				return
			}
		}
		t.Fatalf("opened an envelope the sender did not seal: %s", hex.EncodeToString(b))
	})
}
