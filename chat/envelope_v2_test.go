package chat

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/vectorid"
)

// v2Seeds are inner messages v2 of every shape: plain text, a reference,
// an empty body, a control kind.
func v2Seeds() []Message {
	return []Message{
		{ID: MessageID{1}, SentAt: t0, Kind: KindText, Body: []byte("hello")},
		{ID: MessageID{2}, SentAt: t0, Kind: KindReceipt, Ref: MessageID{1}, Body: []byte{}},
		{ID: MessageID{3}, SentAt: t0, Kind: KindSessionReset, Body: []byte{}},
		{ID: MessageID{4}, SentAt: time.UnixMilli(-1), Kind: "file.offer", Ref: MessageID{9}, Body: []byte{0, 1, 2}},
	}
}

// The inner message v2 round-trips, takes its keys from the envelope, and
// refuses every truncation and any byte after the body.
func TestInnerV2RoundTrip(t *testing.T) {
	alice, bob := vectorid.Identity(t, "alice").PublicKey(), vectorid.Identity(t, "bob").PublicKey()
	for _, m := range v2Seeds() {
		b := marshalInnerV2(&m)
		got, err := parseInnerV2(b, alice, bob)
		if err != nil {
			t.Fatalf("%s: %v", m.Kind, err)
		}
		if got.ID != m.ID || got.From != alice || got.To != bob || !got.SentAt.Equal(m.SentAt) || got.Kind != m.Kind || got.Ref != m.Ref || !bytes.Equal(got.Body, m.Body) {
			t.Errorf("%s: got %+v", m.Kind, got)
		}
		for n := range len(b) {
			if _, err := parseInnerV2(b[:n], alice, bob); !errors.Is(err, ErrMalformed) {
				t.Errorf("%s truncated to %d bytes: %v", m.Kind, n, err)
			}
		}
		if _, err := parseInnerV2(append(b, 0), alice, bob); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s with a trailing byte: %v", m.Kind, err)
		}
	}
	// The rules of a kind hold in v2 too.
	bad := marshalInnerV2(&Message{ID: MessageID{5}, Kind: KindText, Body: []byte("ok")})
	bad[len(bad)-1] = 0xff // not UTF-8
	if _, err := parseInnerV2(bad, alice, bob); !errors.Is(err, ErrMalformed) {
		t.Errorf("a text body that is not UTF-8: %v", err)
	}
	noRef := marshalInnerV2(&Message{ID: MessageID{6}, Kind: KindText})
	noRef[idLen+8+1] = 'r' // "text" → "rext": still well-formed
	if _, err := parseInnerV2(noRef, alice, bob); err != nil {
		t.Errorf("another kind: %v", err)
	}
	zero := marshalInnerV2(&Message{ID: MessageID{7}, Kind: KindText})
	clear(zero[:idLen])
	if _, err := parseInnerV2(zero, alice, bob); !errors.Is(err, ErrMalformed) {
		t.Errorf("the zero message ID: %v", err)
	}
}

// FuzzParseInnerV2 checks the parser of a session envelope's plaintext: no
// panic, only ErrMalformed or ErrTooLarge, and what parses re-encodes to
// exactly its bytes (one encoding per message).
func FuzzParseInnerV2(f *testing.F) {
	for _, m := range v2Seeds() {
		f.Add(marshalInnerV2(&m))
	}
	alice, bob := vectorid.Identity(f, "alice").PublicKey(), vectorid.Identity(f, "bob").PublicKey()
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := parseInnerV2(data, alice, bob)
		if err != nil {
			if m != nil || !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("unexpected outcome: %v, %v", m, err)
			}
			return
		}
		if m.From != alice || m.To != bob || !bytes.Equal(marshalInnerV2(m), data) {
			t.Fatalf("inner message v2 does not re-encode to its bytes: %+v", m)
		}
	})
}
