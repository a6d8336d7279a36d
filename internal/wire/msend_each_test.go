package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/kez-lat/kez-chat/kez"
)

func TestMultiPayloadRoundTrip(t *testing.T) {
	copies := []MultiCopy{{key(1), []byte("to one")}, {key(2), nil}, {key(3), []byte("three")}}
	body, err := EncodeMultiPayload(copies)
	if err != nil {
		t.Fatal(err)
	}
	if want := 6 + 3*36 + 6 + 5; len(body) != want || len(body) != MultiPayloadBodySize(copies) || string(body[:4]) != "KZMP" || body[5] != 3 {
		t.Fatalf("body of %d bytes: % x", len(body), body[:6])
	}
	// The first copy: its key, then its length, then its bytes.
	if !bytes.Equal(body[6:38], kb(key(1))) || binary.BigEndian.Uint32(body[38:]) != 6 || string(body[42:48]) != "to one" {
		t.Fatalf("first copy % x", body[6:48])
	}
	got, err := ParseMultiPayload(body, key(9))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("%d copies", len(got))
	}
	for i, c := range got {
		if c.Device != copies[i].Device || !bytes.Equal(c.Payload, copies[i].Payload) {
			t.Fatalf("copy %d: %v %q", i, c.Device, c.Payload)
		}
	}
	// A payload cannot grow into the next one's bytes.
	if cap(got[0].Payload) != len(got[0].Payload) {
		t.Fatalf("payload capacity %d", cap(got[0].Payload))
	}
	// The other form's parser refuses this one, and this one that.
	if _, _, err := ParseMultiSend(body, key(9)); !errors.Is(err, ErrMultiSend) {
		t.Fatalf("ParseMultiSend of a KZMP body: %v", err)
	}
	shared, _ := EncodeMultiSend([]kez.PublicKey{key(1)}, []byte("x"))
	if _, err := ParseMultiPayload(shared, key(9)); !errors.Is(err, ErrMultiSend) {
		t.Fatalf("ParseMultiPayload of a KZMS body: %v", err)
	}
}

// TestMultiPayloadRefused: every malformed body the gate may be sent.
func TestMultiPayloadRefused(t *testing.T) {
	many := make([]MultiCopy, MaxMultiRecipients+1)
	for i := range many {
		many[i].Device[0], many[i].Device[1] = byte(i), byte(i>>8)
	}
	for name, copies := range map[string][]MultiCopy{
		"none":  nil,
		"1025":  many,
		"twice": {{key(1), nil}, {key(2), nil}, {key(1), []byte("again")}},
	} {
		if _, err := EncodeMultiPayload(copies); !errors.Is(err, ErrMultiSend) {
			t.Errorf("EncodeMultiPayload %s: %v", name, err)
		}
	}
	if _, err := EncodeMultiPayload(many[:MaxMultiRecipients]); err != nil {
		t.Fatalf("%d recipients: %v", MaxMultiRecipients, err)
	}
	// raw writes copies with the lengths given, whatever follows.
	raw := func(n uint16, parts ...[]byte) []byte {
		b := append([]byte("KZMP"), byte(n>>8), byte(n))
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	cp := func(k kez.PublicKey, size uint32, payload string) []byte {
		return append(binary.BigEndian.AppendUint32(kb(k), size), payload...)
	}
	good := raw(2, cp(key(1), 1, "a"), cp(key(2), 2, "bb"))
	if _, err := ParseMultiPayload(good, key(9)); err != nil {
		t.Fatalf("good: %v", err)
	}
	for name, body := range map[string][]byte{
		"empty":            nil,
		"short":            []byte("KZM"),
		"magic":            append([]byte("KZMS"), good[4:]...),
		"zero":             raw(0),
		"1025":             raw(MaxMultiRecipients+1, cp(key(1), 0, "")),
		"truncated":        good[:len(good)-1],
		"trailing":         append(good, 0),
		"count > copies":   raw(3, cp(key(1), 1, "a"), cp(key(2), 2, "bb")),
		"count < copies":   raw(1, cp(key(1), 1, "a"), cp(key(2), 2, "bb")),
		"length too large": raw(1, cp(key(1), 5, "abc")),
		"length 2^32-1":    raw(1, cp(key(1), 1<<32-1, "abc")),
		"length eats next": raw(2, cp(key(1), 37, "a"), cp(key(2), 0, "")),
		"duplicate":        raw(2, cp(key(1), 0, ""), cp(key(1), 0, "")),
		"self":             raw(2, cp(key(1), 0, ""), cp(key(9), 0, "")),
		"half a key":       raw(1, kb(key(1))[:20]),
	} {
		if _, err := ParseMultiPayload(body, key(9)); !errors.Is(err, ErrMultiSend) {
			t.Errorf("ParseMultiPayload %s: %v", name, err)
		}
	}
}

// kb returns a copy of k's bytes.
func kb(k kez.PublicKey) []byte { return append([]byte(nil), k[:]...) }

// FuzzParseMultiPayload: the parser never panics, refuses with a typed
// error, and whatever it accepts encodes back to the same bytes.
func FuzzParseMultiPayload(f *testing.F) {
	good, _ := EncodeMultiPayload([]MultiCopy{{key(1), []byte("x")}, {key(2), []byte("yz")}})
	one, _ := EncodeMultiPayload([]MultiCopy{{key(3), nil}})
	shared, _ := EncodeMultiSend([]kez.PublicKey{key(1)}, []byte("x"))
	for _, s := range [][]byte{good, one, shared, good[:40], append(good, 0), []byte("KZMP\x00\x00"), []byte("KZMP\xff\xff"),
		[]byte("KZMP\x00\x01" + string(make([]byte, 32)) + "\xff\xff\xff\xff")} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		copies, err := ParseMultiPayload(b, key(9))
		if err != nil {
			if !errors.Is(err, ErrMultiSend) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		again, err := EncodeMultiPayload(copies)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("accepted % x, encodes to % x (%v)", b, again, err)
		}
	})
}

func TestSplitMultiPayload(t *testing.T) {
	mk := func(n, size int) []MultiCopy {
		cs := make([]MultiCopy, n)
		for i := range cs {
			cs[i].Device[0], cs[i].Device[1] = byte(i), byte(i>>8)
			cs[i].Payload = make([]byte, size)
		}
		return cs
	}
	lens := func(runs [][]MultiCopy) []int {
		var out []int
		for _, r := range runs {
			out = append(out, len(r))
		}
		return out
	}
	for _, c := range []struct {
		name    string
		copies  []MultiCopy
		maxBody int
		want    []int
	}{
		{"none", nil, 1000, nil},
		{"one run", mk(3, 10), 1000, []int{3}},
		// 6 + 3 × 46 = 144 bytes fit exactly; the fourth starts a run.
		{"exact fit", mk(4, 10), 144, []int{3, 1}},
		{"one byte short", mk(4, 10), 143, []int{2, 2}},
		{"by count", mk(2500, 0), 1 << 30, []int{1024, 1024, 452}},
		{"too large alone", append(mk(1, 500), mk(2, 1)...), 100, []int{1, 2}},
	} {
		runs := SplitMultiPayload(c.copies, c.maxBody)
		if fmt.Sprint(lens(runs)) != fmt.Sprint(c.want) {
			t.Errorf("%s: runs of %v, want %v", c.name, lens(runs), c.want)
		}
		total := 0
		for _, r := range runs {
			if len(r) > 1 && MultiPayloadBodySize(r) > c.maxBody {
				t.Errorf("%s: a run of %d bytes", c.name, MultiPayloadBodySize(r))
			}
			total += len(r)
		}
		if total != len(c.copies) {
			t.Errorf("%s: %d copies in the runs, %d given", c.name, total, len(c.copies))
		}
	}
}
