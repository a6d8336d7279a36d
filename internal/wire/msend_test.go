package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/nats.go/jetstream"
)

// key returns a fixed device key whose bytes are all b.
func key(b byte) kez.PublicKey {
	var k kez.PublicKey
	for i := range k {
		k[i] = b
	}
	return k
}

func TestMultiSendRoundTrip(t *testing.T) {
	devices := []kez.PublicKey{key(1), key(2), key(3)}
	body, err := EncodeMultiSend(devices, []byte("payload"))
	if err != nil {
		t.Fatal(err)
	}
	if want := 4 + 2 + 3*32 + 7; len(body) != want || string(body[:4]) != "KZMS" || body[4] != 0 || body[5] != 3 {
		t.Fatalf("body % x", body[:6])
	}
	got, payload, err := ParseMultiSend(body, key(9))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(devices) || string(payload) != "payload" {
		t.Fatalf("got %v %q", got, payload)
	}
	// An empty payload is a payload.
	body, _ = EncodeMultiSend(devices[:1], nil)
	if _, p, err := ParseMultiSend(body, key(9)); err != nil || len(p) != 0 {
		t.Fatalf("empty payload: %q %v", p, err)
	}
}

// TestMultiSendRefused: every malformed body the gate may be sent.
func TestMultiSendRefused(t *testing.T) {
	many := make([]kez.PublicKey, MaxMultiRecipients+1)
	for i := range many {
		many[i][0], many[i][1] = byte(i), byte(i>>8)
	}
	for _, c := range []struct {
		name    string
		devices []kez.PublicKey
	}{
		{"none", nil},
		{"1025", many},
		{"twice", []kez.PublicKey{key(1), key(2), key(1)}},
	} {
		if _, err := EncodeMultiSend(c.devices, nil); !errors.Is(err, ErrMultiSend) {
			t.Errorf("EncodeMultiSend %s: %v", c.name, err)
		}
	}
	if _, err := EncodeMultiSend(many[:MaxMultiRecipients], nil); err != nil {
		t.Fatalf("%d recipients: %v", MaxMultiRecipients, err)
	}
	good, _ := EncodeMultiSend([]kez.PublicKey{key(1), key(2)}, []byte("x"))
	raw := func(n uint16, keys ...kez.PublicKey) []byte {
		b := append([]byte("KZMS"), byte(n>>8), byte(n))
		for _, k := range keys {
			b = append(b, k[:]...)
		}
		return b
	}
	for name, body := range map[string][]byte{
		"empty":        nil,
		"short":        []byte("KZM"),
		"magic":        append([]byte("KZMX"), good[4:]...),
		"zero":         raw(0),
		"1025":         raw(MaxMultiRecipients+1, many...),
		"truncated":    good[:6+32+31],
		"count > keys": raw(3, key(1), key(2)),
		"duplicate":    raw(2, key(1), key(1)),
		"self":         raw(2, key(1), key(9)),
	} {
		if _, _, err := ParseMultiSend(body, key(9)); !errors.Is(err, ErrMultiSend) {
			t.Errorf("ParseMultiSend %s: %v", name, err)
		}
	}
}

func TestParseMultiAnswer(t *testing.T) {
	devices := []kez.PublicKey{key(1), key(2), key(3)}
	a := MultiAnswer{Stored: 1, Duplicates: 1, Refused: []MultiRefusal{{Device: key(3), Code: ErrCodeRecipientRevoked}}}
	b, _ := json.Marshal(a)
	if want := `{"stored":1,"duplicates":1,"refused":[{"device":"` + key(3).String() + `","code":21410}]}`; string(b) != want {
		t.Fatalf("answer %s", b)
	}
	got, err := ParseMultiAnswer(b, devices)
	if err != nil || got.Stored != 1 || got.Duplicates != 1 || len(got.Refused) != 1 || got.Refused[0] != a.Refused[0] {
		t.Fatalf("got %+v, %v", got, err)
	}
	// A refusal of the whole send is the JetStream API error it is.
	_, err = ParseMultiAnswer([]byte(`{"error":{"code":429,"err_code":21429,"description":"sender over its rate limit"}}`), devices)
	var ae *jetstream.APIError
	if !errors.As(err, &ae) || ae.ErrorCode != ErrCodeSenderQuota {
		t.Fatalf("error answer: %v", err)
	}
	for name, s := range map[string]string{
		"not json":         `stored`,
		"trailing":         `{"stored":3} {}`,
		"too few":          `{"stored":2}`,
		"too many":         `{"stored":3,"duplicates":1}`,
		"negative":         `{"stored":4,"duplicates":-1}`,
		"refused stranger": `{"stored":2,"refused":[{"device":"` + key(7).String() + `","code":21404}]}`,
		"refused twice":    `{"stored":1,"refused":[{"device":"` + key(1).String() + `","code":21404},{"device":"` + key(1).String() + `","code":21404}]}`,
		"no code":          `{"stored":2,"refused":[{"device":"` + key(1).String() + `"}]}`,
		"bad key":          `{"stored":2,"refused":[{"device":"Uxyz","code":21404}]}`,
		"error no code":    `{"error":{"code":500}}`,
		"huge":             `{"stored":3,"x":"` + string(bytes.Repeat([]byte("a"), MaxMultiAnswer)) + `"}`,
	} {
		if _, err := ParseMultiAnswer([]byte(s), devices); !errors.Is(err, ErrMultiSend) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// FuzzParseMultiSend: the parser never panics, and whatever it accepts
// encodes back to the same bytes.
func FuzzParseMultiSend(f *testing.F) {
	good, _ := EncodeMultiSend([]kez.PublicKey{key(1), key(2)}, []byte("x"))
	one, _ := EncodeMultiSend([]kez.PublicKey{key(3)}, nil)
	for _, s := range [][]byte{good, one, good[:40], []byte("KZMS\x00\x00"), []byte("KZMS\xff\xff"), []byte("KZMS\x00\x02" + string(make([]byte, 64)))} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		devices, payload, err := ParseMultiSend(b, key(9))
		if err != nil {
			if !errors.Is(err, ErrMultiSend) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		again, err := EncodeMultiSend(devices, payload)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("accepted % x, encodes to % x (%v)", b, again, err)
		}
	})
}

// FuzzParseMultiAnswer: the parser never panics, and an answer it accepts
// accounts for each device once.
func FuzzParseMultiAnswer(f *testing.F) {
	devices := []kez.PublicKey{key(1), key(2), key(3)}
	for _, s := range []string{
		`{"stored":3}`, `{"stored":1,"duplicates":1,"refused":[{"device":"` + key(3).String() + `","code":21410}]}`,
		`{"error":{"code":429,"err_code":21429,"description":"x"}}`, `{"stored":-1,"duplicates":4}`, `[]`, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ParseMultiAnswer(b, devices)
		var ae *jetstream.APIError
		if err != nil {
			if !errors.Is(err, ErrMultiSend) && !errors.As(err, &ae) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if a.Stored+a.Duplicates+len(a.Refused) != len(devices) || a.Stored < 0 || a.Duplicates < 0 {
			t.Fatalf("accepted %+v", a)
		}
	})
}
