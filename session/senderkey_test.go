package session

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"testing"

	"github.com/kez-lat/kez-chat/internal/testenv/vectorid"
	"github.com/kez-lat/kez-chat/kez"
)

// testGID is the group of the sender key tests.
var testGID = [32]byte{0x67, 0x69, 0x64}

// newTestSenderKey makes a sender key for the device of name at epoch, from
// a fixed seed.
func newTestSenderKey(tb testing.TB, name string, epoch uint64) *SenderKey {
	tb.Helper()
	dev := vectorid.Identity(tb, name).PublicKey()
	k, err := NewSenderKey(newSeeded(fmt.Sprintf("sender key %s %d", name, epoch)), testGID, epoch, dev)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// sealGroup seals text with k.
func sealGroup(tb testing.TB, k *SenderKey, text string) []byte {
	tb.Helper()
	env, err := k.Seal([]byte(text))
	if err != nil {
		tb.Fatal(err)
	}
	return env
}

// openGroupOK opens env with r and checks its plaintext.
func openGroupOK(tb testing.TB, r *ReceiverKey, env []byte, want string) {
	tb.Helper()
	pt, err := r.Open(env)
	if err != nil || string(pt) != want {
		tb.Fatalf("Open: %q, %v; want %q", pt, err, want)
	}
}

// refuseGroup checks that r refuses env with want and stays as it was.
func refuseGroup(tb testing.TB, r *ReceiverKey, env []byte, want error) {
	tb.Helper()
	before, _ := r.MarshalBinary()
	pt, err := r.Open(env)
	if !errors.Is(err, want) || pt != nil {
		tb.Fatalf("Open: got %q, %v; want %v", pt, err, want)
	}
	if after, _ := r.MarshalBinary(); !bytes.Equal(before, after) {
		tb.Fatalf("a refused Open (%v) changed the receiver key", err)
	}
}

// receiverOf makes a receiver key from k's current distribution, through
// its wire form.
func receiverOf(tb testing.TB, k *SenderKey) *ReceiverKey {
	tb.Helper()
	b, err := k.Distribution().MarshalBinary()
	if err != nil {
		tb.Fatal(err)
	}
	d, err := ParseSenderKeyDistribution(b)
	if err != nil {
		tb.Fatal(err)
	}
	return NewReceiverKey(d)
}

func TestSenderKeyRoundTrip(t *testing.T) {
	k := newTestSenderKey(t, "alice", 1)
	r1, r2 := receiverOf(t, k), receiverOf(t, k) // two member devices
	for i := range 20 {
		text := fmt.Sprintf("message %d", i)
		env := sealGroup(t, k, text)
		h, err := ParseGroupHeader(env)
		if err != nil {
			t.Fatal(err)
		}
		if h != (GroupHeader{GID: testGID, Epoch: 1, Device: k.Device(), Iteration: uint32(i)}) {
			t.Fatalf("header %+v", h)
		}
		if len(env) != GroupHeaderLen+len(text)+16+64 {
			t.Fatalf("envelope of %d bytes", len(env))
		}
		openGroupOK(t, r1, env, text)
		openGroupOK(t, r2, env, text)
	}
	if k.Iteration() != 20 || r1.Iteration() != 20 || r1.GID() != testGID || r1.Epoch() != 1 || r1.Device() != k.Device() || k.GID() != testGID || k.Epoch() != 1 {
		t.Fatalf("iteration %d/%d", k.Iteration(), r1.Iteration())
	}
	// An empty message and the largest one.
	openGroupOK(t, r1, sealGroup(t, k, ""), "")
	big := string(bytes.Repeat([]byte{'x'}, MaxGroupPlaintextSize))
	env := sealGroup(t, k, big)
	if len(env) != MaxEnvelopeSize {
		t.Fatalf("the largest envelope is %d bytes", len(env))
	}
	openGroupOK(t, r1, env, big)
	if _, err := k.Seal(make([]byte, MaxGroupPlaintextSize+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Seal of one byte too many: %v", err)
	}
}

func TestSenderKeyOutOfOrder(t *testing.T) {
	k := newTestSenderKey(t, "alice", 1)
	r := receiverOf(t, k)
	var envs [][]byte
	for i := range 10 {
		envs = append(envs, sealGroup(t, k, fmt.Sprint(i)))
	}
	for _, i := range []int{9, 3, 0, 8, 1, 2, 7, 4, 6, 5} {
		openGroupOK(t, r, envs[i], fmt.Sprint(i))
	}
	if len(r.skipped) != 0 {
		t.Fatalf("%d skipped keys left after every message arrived", len(r.skipped))
	}
	for i := range envs { // each key was deleted once used
		refuseGroup(t, r, envs[i], ErrReplay)
	}
}

func TestSenderKeyReplay(t *testing.T) {
	k := newTestSenderKey(t, "alice", 1)
	r := receiverOf(t, k)
	e0, e1, e2 := sealGroup(t, k, "0"), sealGroup(t, k, "1"), sealGroup(t, k, "2")
	openGroupOK(t, r, e0, "0")
	refuseGroup(t, r, e0, ErrReplay) // in order
	openGroupOK(t, r, e2, "2")
	refuseGroup(t, r, e2, ErrReplay) // the last one
	openGroupOK(t, r, e1, "1")
	refuseGroup(t, r, e1, ErrReplay) // from a skipped key
	// A replay through a stored and reloaded key is still one.
	b, _ := r.MarshalBinary()
	r2, err := ParseReceiverKey(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range [][]byte{e0, e1, e2} {
		refuseGroup(t, r2, e, ErrReplay)
	}
}

func TestSenderKeySkipWindow(t *testing.T) {
	k := newTestSenderKey(t, "alice", 1)
	r := receiverOf(t, k)
	envs := make([][]byte, 0, 2*MaxSenderKeySkip+3)
	for i := range 2*MaxSenderKeySkip + 3 {
		envs = append(envs, sealGroup(t, k, fmt.Sprint(i)))
	}
	// One past the window: refused, nothing derived.
	refuseGroup(t, r, envs[MaxSenderKeySkip+1], ErrTooFarAhead)
	// Exactly at the window: MaxSenderKeySkip keys are skipped.
	openGroupOK(t, r, envs[MaxSenderKeySkip], fmt.Sprint(MaxSenderKeySkip))
	if len(r.skipped) != MaxSenderKeySkip {
		t.Fatalf("%d skipped keys", len(r.skipped))
	}
	// The window counts from the next expected iteration (2001), not
	// the first.
	refuseGroup(t, r, envs[2*MaxSenderKeySkip+2], ErrTooFarAhead)
	// 4000 skips 2001..3999: 3999 keys, of which the 2000 highest are kept.
	openGroupOK(t, r, envs[2*MaxSenderKeySkip], fmt.Sprint(2*MaxSenderKeySkip))
	if len(r.skipped) != MaxSenderKeySkip || r.skipped[0].n != MaxSenderKeySkip-1 {
		t.Fatalf("%d skipped keys from %d", len(r.skipped), r.skipped[0].n)
	}
	refuseGroup(t, r, envs[0], ErrReplay) // its key was dropped
	openGroupOK(t, r, envs[MaxSenderKeySkip-1], fmt.Sprint(MaxSenderKeySkip-1))
	openGroupOK(t, r, envs[2*MaxSenderKeySkip-1], fmt.Sprint(2*MaxSenderKeySkip-1))
	b, _ := r.MarshalBinary()
	if _, err := ParseReceiverKey(b); err != nil {
		t.Fatalf("a full receiver key does not reload: %v", err)
	}
}

// TestSenderKeyLateReader: a distribution made at iteration k opens k and
// later, never an earlier message: a member added to the group, given the
// current sender key, cannot read what was sent before.
func TestSenderKeyLateReader(t *testing.T) {
	k := newTestSenderKey(t, "alice", 1)
	early := receiverOf(t, k)
	var before [][]byte
	for i := range 5 {
		before = append(before, sealGroup(t, k, fmt.Sprint("before ", i)))
	}
	late := receiverOf(t, k)
	d := k.Distribution()
	if d.Iteration != 5 {
		t.Fatalf("distribution at %d", d.Iteration)
	}
	after := sealGroup(t, k, "after")
	for _, e := range before {
		refuseGroup(t, late, e, ErrOlderThanKey)
	}
	openGroupOK(t, late, after, "after")
	for i, e := range before {
		openGroupOK(t, early, e, fmt.Sprint("before ", i))
	}
	openGroupOK(t, early, after, "after")
	// The late chain key is none of the earlier ones: it is their hash.
	c := newTestSenderKey(t, "alice", 1).ck
	for range 5 {
		if c == d.ChainKey {
			t.Fatal("the late distribution carries an earlier chain key")
		}
		c, _ = kdfCK(&c)
	}
	if c != d.ChainKey {
		t.Fatal("the distribution's chain key is not CK_5")
	}
}

// TestSenderKeyNewEpoch: after a removal every sender makes a new sender
// key at the new epoch, distributed to the remaining members only; the
// removed member's receiver keys are of the old epoch and open nothing new.
func TestSenderKeyNewEpoch(t *testing.T) {
	old := newTestSenderKey(t, "alice", 3)
	removed := receiverOf(t, old)
	openGroupOK(t, removed, sealGroup(t, old, "before the removal"), "before the removal")
	next := newTestSenderKey(t, "alice", 4)
	stays := receiverOf(t, next)
	openGroupOK(t, stays, sealGroup(t, next, "first at epoch 4"), "first at epoch 4")
	env := sealGroup(t, next, "after the removal")
	refuseGroup(t, removed, env, ErrWrongGroup)
	openGroupOK(t, stays, env, "after the removal")
	// Not even by relabelling: the epoch is signed, and the chain differs.
	bad := bytes.Clone(env)
	binary.BigEndian.PutUint64(bad[offGroupEpoch:], 3)
	refuseGroup(t, removed, bad, ErrBadSignature)
	refuseGroup(t, removed, signGroup(old.sign, bad[:len(bad)-sigLen]), ErrDecrypt)
}

func TestSenderKeyTampered(t *testing.T) {
	k := newTestSenderKey(t, "alice", 1)
	r := receiverOf(t, k)
	env := sealGroup(t, k, "a message whose every byte is checked")
	fields := []field{
		{0, 4, ErrMalformed}, {4, 6, ErrUnsupportedVersion}, {6, 46, ErrWrongGroup}, {46, 78, ErrWrongSender},
		{78, len(env), ErrBadSignature}, // the iteration, the ciphertext and the signature are signed
	}
	for off := range env {
		bad := bytes.Clone(env)
		bad[off] ^= 0x01
		refuseGroup(t, r, bad, fieldErr(fields, off))
	}
	// Every truncation.
	for n := range len(env) {
		want := ErrMalformed
		if n >= groupMinLen {
			want = ErrBadSignature
		} else if n >= 6 {
			want = ErrMalformed
		}
		refuseGroup(t, r, env[:n], want)
	}
	refuseGroup(t, r, append(bytes.Clone(env), 0), ErrBadSignature)
	// Tampered and re-signed by the genuine signing key: the AEAD refuses.
	for _, off := range []int{offGroupIteration + 3, offGroupCT, len(env) - sigLen - 1} {
		bad := bytes.Clone(env)
		bad[off] ^= 0x01
		refuseGroup(t, r, signGroup(k.sign, bad[:len(bad)-sigLen]), ErrDecrypt)
	}
	openGroupOK(t, r, env, "a message whose every byte is checked")
}

// TestSenderKeyInsiderForgery: every member holds the chain key, so the
// AEAD alone would let any of them write as alice; the signature stops it.
func TestSenderKeyInsiderForgery(t *testing.T) {
	k := newTestSenderKey(t, "alice", 1)
	victim := receiverOf(t, k)
	d := k.Distribution() // what bob, a member, received
	mallory := &SenderKey{gid: d.GID, epoch: d.Epoch, device: d.Device, iteration: d.Iteration, ck: d.ChainKey,
		sign: ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, 32))}
	refuseGroup(t, victim, sealGroup(t, mallory, "forged"), ErrBadSignature)
	// Nor with bob's own device key, nor a signature for another context.
	bob := vectorid.Identity(t, "bob")
	mallory.iteration, mallory.ck = d.Iteration, d.ChainKey
	forged := sealGroup(t, mallory, "forged")
	body := forged[:len(forged)-sigLen]
	sig, err := bob.Sign(groupSigContext, body)
	if err != nil {
		t.Fatal(err)
	}
	refuseGroup(t, victim, append(bytes.Clone(body), sig...), ErrBadSignature)
	m, _ := kez.SignedMessage(kez.ContextMessage, body)
	refuseGroup(t, victim, append(bytes.Clone(body), ed25519.Sign(k.sign, m)...), ErrBadSignature)
	openGroupOK(t, victim, sealGroup(t, k, "genuine"), "genuine")
}

func TestSenderKeyWrongKey(t *testing.T) {
	alice := newTestSenderKey(t, "alice", 1)
	bob := newTestSenderKey(t, "bob", 1)
	ra, rb := receiverOf(t, alice), receiverOf(t, bob)
	ea, eb := sealGroup(t, alice, "from alice"), sealGroup(t, bob, "from bob")
	refuseGroup(t, ra, eb, ErrWrongSender)
	refuseGroup(t, rb, ea, ErrWrongSender)
	other, err := NewSenderKey(newSeeded("other group"), [32]byte{1}, 1, alice.Device())
	if err != nil {
		t.Fatal(err)
	}
	refuseGroup(t, ra, sealGroup(t, other, "other group"), ErrWrongGroup)
	openGroupOK(t, ra, ea, "from alice")
	openGroupOK(t, rb, eb, "from bob")
}

// TestGroupAndSessionVersions: each format's parser refuses the other's
// envelopes by the version byte.
func TestGroupAndSessionVersions(t *testing.T) {
	k := newTestSenderKey(t, "alice", 1)
	env := sealGroup(t, k, "group")
	if _, err := ParseHeader(env); !errors.Is(err, ErrUnsupportedVersion) {
		t.Fatalf("ParseHeader of a group envelope: %v", err)
	}
	p := newPair(t)
	v2 := p.seal(p.a, "pairwise")
	if _, err := ParseGroupHeader(v2); !errors.Is(err, ErrUnsupportedVersion) {
		t.Fatalf("ParseGroupHeader of a session envelope: %v", err)
	}
	refuseGroup(t, receiverOf(t, k), v2, ErrUnsupportedVersion)
}

func TestSenderKeyStoredForm(t *testing.T) {
	k := newTestSenderKey(t, "alice", 7)
	r := receiverOf(t, k)
	var envs [][]byte
	for i := range 6 {
		envs = append(envs, sealGroup(t, k, fmt.Sprint(i)))
	}
	openGroupOK(t, r, envs[5], "5") // five skipped keys
	// The sender key reloaded seals exactly what the original does.
	b, err := k.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	k2, err := ParseSenderKey(b)
	if err != nil {
		t.Fatal(err)
	}
	if b2, _ := k2.MarshalBinary(); !bytes.Equal(b, b2) {
		t.Fatal("the sender key's stored form does not round-trip")
	}
	e1, e2 := sealGroup(t, k, "six"), sealGroup(t, k2, "six")
	if !bytes.Equal(e1, e2) {
		t.Fatal("a reloaded sender key seals differently")
	}
	// The receiver key reloaded opens the skipped and the next messages.
	rb, _ := r.MarshalBinary()
	r2, err := ParseReceiverKey(rb)
	if err != nil {
		t.Fatal(err)
	}
	if rb2, _ := r2.MarshalBinary(); !bytes.Equal(rb, rb2) {
		t.Fatal("the receiver key's stored form does not round-trip")
	}
	for _, i := range []int{2, 0, 4} {
		openGroupOK(t, r2, envs[i], fmt.Sprint(i))
	}
	openGroupOK(t, r2, e1, "six")
	refuseGroup(t, r2, envs[5], ErrReplay)
	// A distribution round-trips.
	db, _ := k.Distribution().MarshalBinary()
	d, err := ParseSenderKeyDistribution(db)
	if err != nil || *d != *k.Distribution() || len(db) != DistributionLen {
		t.Fatalf("distribution: %v", err)
	}
}

func TestParseSenderKeyRefuses(t *testing.T) {
	k := newTestSenderKey(t, "alice", 1)
	good, _ := k.MarshalBinary()
	mod := func(f func([]byte) []byte) []byte { return f(bytes.Clone(good)) }
	for name, c := range map[string]struct {
		b    []byte
		want error
	}{
		"empty":         {nil, ErrMalformed},
		"magic":         {mod(func(b []byte) []byte { b[0] = 'X'; return b }), ErrMalformed},
		"receiver form": {mod(func(b []byte) []byte { b[3] = 'R'; return b }), ErrMalformed},
		"version":       {mod(func(b []byte) []byte { b[4] = 2; return b }), ErrUnsupportedVersion},
		"short":         {good[:len(good)-1], ErrMalformed},
		"long":          {append(bytes.Clone(good), 0), ErrMalformed},
		"no device":     {mod(func(b []byte) []byte { clear(b[45:77]); return b }), ErrMalformed},
		"distribution":  {must(k.Distribution().MarshalBinary()), ErrMalformed},
	} {
		if _, err := ParseSenderKey(c.b); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
	// An exhausted key seals nothing more.
	ex := mod(func(b []byte) []byte { binary.BigEndian.PutUint32(b[77:], math.MaxUint32); return b })
	kx, err := ParseSenderKey(ex)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kx.Seal([]byte("x")); err == nil || kx.Iteration() != math.MaxUint32 {
		t.Fatal("an exhausted sender key sealed")
	}
	if _, err := NewSenderKey(bytes.NewReader(make([]byte, 63)), testGID, 1, k.Device()); err == nil {
		t.Fatal("NewSenderKey with 63 bytes of randomness")
	}
	if _, err := NewSenderKey(nil, testGID, 1, kez.PublicKey{}); err == nil {
		t.Fatal("NewSenderKey without a device")
	}
	if k, err := NewSenderKey(nil, testGID, 1, k.Device()); err != nil || k.ck == ([32]byte{}) {
		t.Fatalf("NewSenderKey from crypto/rand: %v", err)
	}
}

func TestParseReceiverKeyRefuses(t *testing.T) {
	k := newTestSenderKey(t, "alice", 1)
	r := receiverOf(t, k)
	for range 3 {
		sealGroup(t, k, "skipped")
	}
	openGroupOK(t, r, sealGroup(t, k, "3"), "3") // skipped: 0, 1, 2
	good, _ := r.MarshalBinary()
	const offFirst, offNext, offCount = 4 + 1 + 32 + 8 + 32 + 32, 4 + 1 + 32 + 8 + 32 + 32 + 4, receiverFixedLen - 2
	mod := func(f func([]byte) []byte) []byte { return f(bytes.Clone(good)) }
	skip := func(i int) int { return receiverFixedLen + i*receiverSkipLen }
	for name, c := range map[string]struct {
		b    []byte
		want error
	}{
		"empty":          {nil, ErrMalformed},
		"magic":          {mod(func(b []byte) []byte { b[0] = 'X'; return b }), ErrMalformed},
		"sender form":    {must(k.MarshalBinary()), ErrMalformed},
		"version":        {mod(func(b []byte) []byte { b[4] = 0; return b }), ErrUnsupportedVersion},
		"short":          {good[:receiverFixedLen-1], ErrMalformed},
		"cut skipped":    {good[:len(good)-1], ErrMalformed},
		"trailing":       {append(bytes.Clone(good), 0), ErrMalformed},
		"no device":      {mod(func(b []byte) []byte { clear(b[45:77]); return b }), ErrMalformed},
		"next<first":     {mod(func(b []byte) []byte { binary.BigEndian.PutUint32(b[offFirst:], 5); return b }), ErrMalformed},
		"count high":     {mod(func(b []byte) []byte { binary.BigEndian.PutUint16(b[offCount:], 4); return b }), ErrMalformed},
		"count max":      {mod(func(b []byte) []byte { binary.BigEndian.PutUint16(b[offCount:], MaxSenderKeySkip+1); return b }), ErrMalformed},
		"unsorted":       {mod(func(b []byte) []byte { binary.BigEndian.PutUint32(b[skip(1):], 0); return b }), ErrMalformed},
		"skipped ahead":  {mod(func(b []byte) []byte { binary.BigEndian.PutUint32(b[skip(2):], 4); return b }), ErrMalformed},
		"skipped before": {mod(func(b []byte) []byte { binary.BigEndian.PutUint32(b[offFirst:], 1); return b }), ErrMalformed},
		"next moved":     {mod(func(b []byte) []byte { binary.BigEndian.PutUint32(b[offNext:], 2); return b }), ErrMalformed},
	} {
		if _, err := ParseReceiverKey(c.b); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
}

func TestParseDistributionRefuses(t *testing.T) {
	good, _ := newTestSenderKey(t, "alice", 1).Distribution().MarshalBinary()
	for name, c := range map[string]struct {
		b    []byte
		want error
	}{
		"empty":     {nil, ErrMalformed},
		"version 0": {append([]byte{0}, good[1:]...), ErrUnsupportedVersion},
		"version 2": {append([]byte{2}, good[1:]...), ErrUnsupportedVersion},
		"short":     {good[:DistributionLen-1], ErrMalformed},
		"long":      {append(bytes.Clone(good), 0), ErrMalformed},
		"no device": {func() []byte { b := bytes.Clone(good); clear(b[41:73]); return b }(), ErrMalformed},
	} {
		if _, err := ParseSenderKeyDistribution(c.b); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}
