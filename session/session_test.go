package session

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/vectorid"
	"github.com/kez-lat/kez-chat/kez"
)

func TestRoundTrip(t *testing.T) {
	p := newPair(t)
	if p.a.Established() || p.a.Peer() != p.bob.PublicKey() {
		t.Fatalf("a new session: established %v, peer %s", p.a.Established(), p.a.Peer())
	}
	hs1, hs2 := p.seal(p.a, "hello bob"), p.seal(p.a, "are you there?")
	for _, hs := range [][]byte{hs1, hs2} {
		h, err := ParseHeader(hs)
		if err != nil {
			t.Fatal(err)
		}
		want := Header{Version: 2, Type: TypeHandshake, Sender: p.alice.PublicKey(), Recipient: p.bob.PublicKey(), SessionID: p.a.ID()}
		if h != want {
			t.Fatalf("handshake header %+v, want %+v", h, want)
		}
	}
	if !bytes.Equal(hs1[:hybridSuite.prefixLen()], hs2[:hybridSuite.prefixLen()]) {
		t.Fatal("two handshakes of one session have different prefixes")
	}
	b, pt, err := Accept(p.bob, hs1, lookupOf(p.prekey), t0)
	if err != nil || string(pt) != "hello bob" {
		t.Fatalf("Accept: %q, %v", pt, err)
	}
	p.b = b
	if b.ID() != p.a.ID() || b.Peer() != p.alice.PublicKey() || !b.Established() {
		t.Fatalf("accepted session: ID %x (initiator's %x), peer %s, established %v", b.ID(), p.a.ID(), b.Peer(), b.Established())
	}
	p.open(p.b, hs2, "are you there?")

	reply := p.seal(p.b, "hi alice")
	if h, err := ParseHeader(reply); err != nil || h.Type != TypeMessage || h.SessionID != p.a.ID() || h.Sender != p.bob.PublicKey() || h.Recipient != p.alice.PublicKey() {
		t.Fatalf("reply header %+v, %v", h, err)
	}
	p.open(p.a, reply, "hi alice")
	if !p.a.Established() {
		t.Fatal("the initiator is not established after opening a reply")
	}
	if h, _ := ParseHeader(p.seal(p.a, "now type 2")); h.Type != TypeMessage {
		t.Fatalf("an established initiator sealed type %d", h.Type)
	}

	// Bursts of random length each way, each burst a DH step.
	rng := rand.New(rand.NewPCG(1, 2))
	sides := [2]*Session{p.a, p.b}
	for round := 0; round < 20; round++ {
		from, to := sides[round%2], sides[1-round%2]
		for i := rng.IntN(4); i >= 0; i-- {
			msg := fmt.Sprintf("round %d message %d", round, i)
			p.open(to, p.seal(from, msg), msg)
		}
	}
	// Sizes: empty, and the largest plaintext of each type.
	p.open(p.b, p.seal(p.a, ""), "")
	big := bytes.Repeat([]byte("x"), MaxEnvelopeSize-msgMinLen)
	env, err := p.a.Seal(p.rnd, big)
	if err != nil || len(env) != MaxEnvelopeSize {
		t.Fatalf("largest type-2 plaintext: %d bytes, %v", len(env), err)
	}
	if got, err := p.b.Open(env, t0); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("largest message: %v", err)
	}
	before := state(t, p.a)
	if _, err := p.a.Seal(p.rnd, append(big, 'x')); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversize plaintext: %v", err)
	}
	if !bytes.Equal(before, state(t, p.a)) {
		t.Fatal("a refused Seal changed the state")
	}
}

func TestLargestHandshake(t *testing.T) {
	p := newPair(t)
	big := bytes.Repeat([]byte{0xa5}, MaxPlaintextSize)
	env, err := p.a.Seal(p.rnd, big)
	if err != nil || len(env) != MaxEnvelopeSize {
		t.Fatalf("largest handshake plaintext: %d bytes, %v", len(env), err)
	}
	if _, pt, err := Accept(p.bob, env, lookupOf(p.prekey), t0); err != nil || !bytes.Equal(pt, big) {
		t.Fatalf("Accept: %v", err)
	}
	if _, err := p.a.Seal(p.rnd, append(big, 0)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversize handshake: %v", err)
	}
}

// TestHandshakesBeforeReply: the initiator keeps sending handshakes until
// it hears back; they arrive in any order, and the first to arrive makes
// the session.
func TestHandshakesBeforeReply(t *testing.T) {
	p := newPair(t)
	hs := [][]byte{p.seal(p.a, "one"), p.seal(p.a, "two"), p.seal(p.a, "three")}
	b, pt, err := Accept(p.bob, hs[2], lookupOf(p.prekey), t0)
	if err != nil || string(pt) != "three" {
		t.Fatalf("Accept of the third: %q, %v", pt, err)
	}
	p.b = b
	p.open(p.b, hs[0], "one")
	refuse(t, p.b, hs[2], t0, ErrReplay)
	p.open(p.b, hs[1], "two")
	refuse(t, p.b, hs[0], t0, ErrReplay)
	p.open(p.a, p.seal(p.b, "ok"), "ok")
	// A handshake that was still in flight opens after the switch to type 2.
	late := p.seal(p.a, "type 2 now")
	p.open(p.b, late, "type 2 now")
}

// network delivers envelopes between two sessions in a random order,
// dropping some, storing and reloading the sessions at random points.
type network struct {
	p        *pair
	rng      *rand.Rand
	inflight []flight
	dropped  int
	opened   int
}

type flight struct {
	to  **Session
	env []byte
	msg string
}

func TestOutOfOrderAndLoss(t *testing.T) {
	for seed := uint64(0); seed < 8; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			p := newPair(t)
			p.establish()
			n := &network{p: p, rng: rand.New(rand.NewPCG(seed, 99))}
			for step := 0; step < 400; step++ {
				switch r := n.rng.IntN(10); {
				case r < 4:
					n.send(&p.a, &p.b, step)
				case r < 8:
					n.send(&p.b, &p.a, step)
				case r < 9 && len(n.inflight) > 0:
					n.deliver()
				default:
					// store and reload both sides, as a client does between messages
					for _, s := range []**Session{&p.a, &p.b} {
						c, err := ParseSession(state(t, *s))
						if err != nil {
							t.Fatal(err)
						}
						*s = c
					}
				}
				if n.rng.IntN(3) == 0 && len(n.inflight) > 0 {
					n.deliver()
				}
			}
			for len(n.inflight) > 0 {
				n.deliver()
			}
			if n.opened < 100 || n.dropped == 0 {
				t.Fatalf("opened %d, dropped %d: the test did not exercise what it should", n.opened, n.dropped)
			}
		})
	}
}

func (n *network) send(from, to **Session, step int) {
	msg := fmt.Sprintf("step %d", step)
	env := n.p.seal(*from, msg)
	if n.rng.IntN(20) == 0 {
		n.dropped++ // lost
		return
	}
	n.inflight = append(n.inflight, flight{to: to, env: env, msg: msg})
}

func (n *network) deliver() {
	i := n.rng.IntN(len(n.inflight))
	f := n.inflight[i]
	n.inflight = append(n.inflight[:i], n.inflight[i+1:]...)
	n.p.open(*f.to, f.env, f.msg)
	n.opened++
	// A duplicate is refused, whenever it comes.
	if n.rng.IntN(4) == 0 {
		refuse(n.p.tb, *f.to, f.env, t0, ErrReplay)
	}
}

func TestReplay(t *testing.T) {
	p := newPair(t)
	hs := p.seal(p.a, "hs")
	b, _, err := Accept(p.bob, hs, lookupOf(p.prekey), t0)
	if err != nil {
		t.Fatal(err)
	}
	p.b = b
	refuse(t, p.b, hs, t0, ErrReplay) // the handshake again, through Open

	r := []([]byte){p.seal(p.b, "r0"), p.seal(p.b, "r1"), p.seal(p.b, "r2")}
	p.open(p.a, r[0], "r0")
	refuse(t, p.a, r[0], t0, ErrReplay) // the current chain
	p.open(p.a, r[2], "r2")
	p.open(p.a, r[1], "r1")             // its key was skipped
	refuse(t, p.a, r[1], t0, ErrReplay) // the skipped key was used
	refuse(t, p.a, r[2], t0, ErrReplay)

	// After DH steps the old chain is over: its messages are replays.
	p.open(p.b, p.seal(p.a, "a"), "a")
	p.open(p.a, p.seal(p.b, "b"), "b")
	for _, env := range r {
		refuse(t, p.a, env, t0, ErrReplay)
	}
	refuse(t, p.b, hs, t0, ErrReplay)
}

func TestTooFarAhead(t *testing.T) {
	p := newPair(t)
	p.establish()
	seal := func(s *Session, k int) [][]byte {
		out := make([][]byte, k)
		for i := range out {
			out[i] = p.seal(s, fmt.Sprint(i))
		}
		return out
	}

	// In the current chain.
	m := seal(p.a, MaxSkip+3)
	p.open(p.b, m[0], "0")
	refuse(t, p.b, m[MaxSkip+2], t0, ErrTooFarAhead) // 1001 ahead
	p.open(p.b, m[MaxSkip+1], fmt.Sprint(MaxSkip+1)) // 1000 ahead
	p.open(p.b, m[1], "1")

	// The first message of a new chain.
	p.open(p.a, p.seal(p.b, "step"), "step")
	m = seal(p.a, MaxSkip+2)
	refuse(t, p.b, m[MaxSkip+1], t0, ErrTooFarAhead)
	p.open(p.b, m[MaxSkip], fmt.Sprint(MaxSkip))

	// The previous chain's length (pn) at a DH step.
	p.open(p.a, p.seal(p.b, "step"), "step")
	m = seal(p.a, MaxSkip+2)
	p.open(p.b, m[0], "0")
	p.open(p.a, p.seal(p.b, "step"), "step")
	next := p.seal(p.a, "next chain") // pn = 1002, bob is at 1
	refuse(t, p.b, next, t0, ErrTooFarAhead)
	p.open(p.b, m[MaxSkip+1], fmt.Sprint(MaxSkip+1))
	p.open(p.b, next, "next chain")
}

func TestSkippedKeyBounds(t *testing.T) {
	p := newPair(t)
	p.establish()
	var first [][]byte // message 0 of each chain, never delivered until the end
	for chain := 0; chain < 3; chain++ {
		var last []byte
		for i := 0; i <= MaxSkip; i++ {
			env := p.seal(p.a, fmt.Sprint(i))
			if i == 0 {
				first = append(first, env)
			}
			last = env
		}
		p.open(p.b, last, fmt.Sprint(MaxSkip))
		p.open(p.a, p.seal(p.b, "step"), "step")
	}
	if len(p.b.skipped) != MaxSkippedKeys {
		t.Fatalf("%d skipped keys stored, want the bound %d", len(p.b.skipped), MaxSkippedKeys)
	}
	refuse(t, p.b, first[0], t0, ErrReplay) // dropped: the oldest went first
	p.open(p.b, first[1], "0")
	p.open(p.b, first[2], "0")

	// Expiry: a key is kept SkippedKeyLifetime, then refused and dropped.
	q := newPair(t)
	q.establish()
	m0, m1 := q.seal(q.a, "m0"), q.seal(q.a, "m1")
	q.open(q.b, m1, "m1") // m0's key is stored at t0
	st := state(t, q.b)
	late := t0.Add(SkippedKeyLifetime)
	if got, err := q.b.Open(m0, late); err != nil || string(got) != "m0" {
		t.Fatalf("a skipped key at the end of its life: %q, %v", got, err)
	}
	b2, err := ParseSession(st)
	if err != nil {
		t.Fatal(err)
	}
	refuse(t, b2, m0, late.Add(time.Millisecond), ErrReplay)
	if got, err := b2.Open(q.seal(q.a, "m2"), late.Add(time.Millisecond)); err != nil || string(got) != "m2" {
		t.Fatalf("m2: %q, %v", got, err)
	}
	if len(b2.skipped) != 0 {
		t.Fatalf("%d skipped keys kept past their life", len(b2.skipped))
	}
}

// expected gives the error a tampered envelope must be refused with,
// by the offset of the changed byte.
type field struct {
	from, to int
	err      error
}

func fieldErr(fields []field, off int) error {
	for _, f := range fields {
		if off >= f.from && off < f.to {
			return f.err
		}
	}
	return ErrDecrypt // the ciphertext and the tag
}

func TestTamperedMessage(t *testing.T) {
	p := newPair(t)
	p.establish()
	p.open(p.b, p.seal(p.a, "first"), "first")
	env := p.seal(p.a, "a message whose every byte is checked") // n = 1, bob is at 1
	fields := []field{
		{0, 4, ErrMalformed}, {4, 5, ErrUnsupportedVersion}, {5, 6, ErrUnsupportedVersion},
		{6, 38, ErrWrongSender}, {38, 70, ErrWrongRecipient}, {70, 86, ErrWrongSession},
		{86, 118, ErrDecrypt}, {118, 122, ErrDecrypt},
	}
	for off := range env {
		for _, bit := range []byte{0x01, 0x80} {
			bad := bytes.Clone(env)
			bad[off] ^= bit
			want := fieldErr(fields, off)
			if off >= 122 && off < 126 { // n, and bob expects 1
				switch n := binary.BigEndian.Uint32(bad[122:]); {
				case n < 1:
					want = ErrReplay
				case n-1 > MaxSkip:
					want = ErrTooFarAhead
				}
			}
			refuse(t, p.b, bad, t0, want)
		}
	}
	// Truncated anywhere, or extended.
	for n := range len(env) {
		want := ErrMalformed
		if n >= msgMinLen {
			want = ErrDecrypt
		}
		refuse(t, p.b, env[:n], t0, want)
	}
	refuse(t, p.b, append(bytes.Clone(env), 0), t0, ErrDecrypt)
	refuse(t, p.b, append(bytes.Clone(env), make([]byte, MaxEnvelopeSize-len(env)+1)...), t0, ErrTooLarge)

	// Reordered: fields swapped, or the ciphertext of another message.
	swapped := bytes.Clone(env)
	copy(swapped[6:], env[38:70])
	copy(swapped[38:], env[6:38])
	refuse(t, p.b, swapped, t0, ErrWrongRecipient)
	other := p.seal(p.a, "another message")
	spliced := append(bytes.Clone(other[:msgHeaderLen]), env[msgHeaderLen:]...)
	refuse(t, p.b, spliced, t0, ErrDecrypt)
	p.open(p.b, env, "a message whose every byte is checked")
	p.open(p.b, other, "another message")
}

func TestTamperedHandshake(t *testing.T) {
	p := newPair(t)
	hs := p.seal(p.a, "a handshake whose every byte is checked")
	pl := hybridSuite.prefixLen()
	fields := []field{
		{0, 4, ErrMalformed}, {4, 5, ErrUnsupportedVersion}, {5, 6, ErrUnsupportedVersion},
		{6, 38, ErrBadSignature}, {38, 70, ErrWrongRecipient}, {70, 74, ErrUnknownPrekey},
		{74, 76, ErrUnsupportedVersion}, {76, 78, ErrMalformed}, {78, 78 + hybridEncLen, ErrBadSignature},
		{78 + hybridEncLen, pl - sigLen, ErrMalformed}, // init_dh no longer equals dh_pub
		{pl - sigLen, pl, ErrBadSignature},
		{pl, pl + keyLen, ErrMalformed}, // dh_pub no longer equals init_dh
		{pl + keyLen, pl + keyLen + 4, ErrDecrypt},
		{pl + keyLen + 4, pl + keyLen + 6, ErrTooFarAhead}, {pl + keyLen + 6, pl + keyLen + 8, ErrDecrypt}, // n = 2^24, 2^16; 256, 1
	}
	accept := func(env []byte, want error) {
		t.Helper()
		s, pt, err := Accept(p.bob, env, lookupOf(p.prekey), t0)
		if !errors.Is(err, want) || s != nil || pt != nil {
			t.Fatalf("Accept: %v, want %v", err, want)
		}
	}
	for off := range hs {
		bad := bytes.Clone(hs)
		bad[off] ^= 0x01
		accept(bad, fieldErr(fields, off))
	}
	for n := range len(hs) {
		want := ErrMalformed
		if n >= handshakeMinLen {
			want = ErrDecrypt
		}
		if n < 6 || n%97 == 0 || n >= offEnc-2 && n <= offEnc || n >= pl-2 {
			accept(hs[:n], want)
		}
	}
	accept(append(bytes.Clone(hs), 0), ErrDecrypt)
	accept(append(bytes.Clone(hs), make([]byte, MaxEnvelopeSize-len(hs)+1)...), ErrTooLarge)
	if _, _, err := Accept(p.bob, p.seal(p.a, "ok"), lookupOf(p.prekey), t0); err != nil {
		t.Fatalf("the untampered handshake: %v", err)
	}

	// Accept takes handshakes only.
	p2 := newPair(t)
	p2.establish()
	accept(p2.seal(p2.a, "type 2"), ErrMalformed)
}

func TestHandshakeSignedByAnotherKey(t *testing.T) {
	p := newPair(t)
	carol := vectorid.Identity(t, "carol")
	hs := p.seal(p.a, "from alice?")
	pl := hybridSuite.prefixLen()
	sig, err := carol.Sign(handshakeContext, hs[:pl-sigLen])
	if err != nil {
		t.Fatal(err)
	}
	forged := bytes.Clone(hs)
	copy(forged[pl-sigLen:], sig)
	_, _, err = Accept(p.bob, forged, lookupOf(p.prekey), t0)
	if !errors.Is(err, ErrBadSignature) || !errors.Is(err, kez.ErrBadSignature) {
		t.Fatalf("a handshake claiming alice, signed by carol: %v", err)
	}
	// Signed under another context (a v1 message signature): refused too.
	sig, _ = p.alice.Sign(kez.ContextMessage, hs[:pl-sigLen])
	copy(forged[pl-sigLen:], sig)
	if _, _, err := Accept(p.bob, forged, lookupOf(p.prekey), t0); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("signed under the v1 message context: %v", err)
	}
}

func TestUnknownPrekey(t *testing.T) {
	p := newPair(t)
	hs := p.seal(p.a, "to prekey 7")
	other := testPrekey(t, p.bob, 8)
	carols := testPrekey(t, vectorid.Identity(t, "carol"), 7)
	for name, lookup := range map[string]func(uint32) (*PrekeyPrivate, bool){
		"nil lookup":           nil,
		"deleted":              lookupOf(other),
		"another owner's":      lookupOf(carols),
		"lookup lies about ID": func(uint32) (*PrekeyPrivate, bool) { return other, true },
		"found, but nil":       func(uint32) (*PrekeyPrivate, bool) { return nil, true },
	} {
		if _, _, err := Accept(p.bob, hs, lookup, t0); !errors.Is(err, ErrUnknownPrekey) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Bob's prekey 7 regenerated (same ID, other keys): the KEM gives
	// another secret, and the message does not decrypt.
	regen, err := NewPrekey(newSeeded("regenerated"), p.bob, 7, t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Accept(p.bob, hs, lookupOf(regen), t0); !errors.Is(err, ErrDecrypt) {
		t.Errorf("a different prekey 7: %v", err)
	}
}

func TestWrongParties(t *testing.T) {
	p := newPair(t)
	p.establish()
	carol := vectorid.Identity(t, "carol")

	// A handshake to bob, accepted by carol.
	hs := p.seal(newPair(t).a, "for bob")
	if _, _, err := Accept(carol, hs, lookupOf(testPrekey(t, carol, 7)), t0); !errors.Is(err, ErrWrongRecipient) {
		t.Fatalf("carol accepts bob's handshake: %v", err)
	}
	// Carol's session with bob, and her messages opened in alice's.
	c, err := Initiate(p.rnd, carol, &p.prekey.Public, t0)
	if err != nil {
		t.Fatal(err)
	}
	cb, _, err := Accept(p.bob, p.seal(c, "carol here"), lookupOf(p.prekey), t0)
	if err != nil {
		t.Fatal(err)
	}
	p.open(c, p.seal(cb, "hi carol"), "hi carol")
	fromCarol := p.seal(c, "carol again")
	refuse(t, p.b, fromCarol, t0, ErrWrongSender)
	refuse(t, p.b, p.seal(c, "hs?"), t0, ErrWrongSender)
	// Alice's message opened by alice; bob's to alice opened in carol's session.
	toBob := p.seal(p.a, "to bob")
	refuse(t, p.a, toBob, t0, ErrWrongRecipient)
	refuse(t, cb, toBob, t0, ErrWrongSender)
	// Another session between the same two keys.
	q := &pair{tb: t, alice: p.alice, bob: p.bob, prekey: p.prekey, rnd: p.rnd}
	var err2 error
	if q.a, err2 = Initiate(p.rnd, p.alice, &p.prekey.Public, t0); err2 != nil {
		t.Fatal(err2)
	}
	q.establish()
	refuse(t, q.b, toBob, t0, ErrWrongSession)
	moved := bytes.Clone(toBob)
	id := q.b.ID()
	copy(moved[offSessionID:], id[:])
	refuse(t, q.b, moved, t0, ErrDecrypt) // relabelled: its keys are not this session's
	refuse(t, q.b, p.seal(newPair(t).a, "hs of another session"), t0, ErrWrongSession)
	p.open(p.b, toBob, "to bob")
}

func TestSerializationMidConversation(t *testing.T) {
	p := newPair(t)
	check := func(s **Session) {
		t.Helper()
		b := state(t, *s)
		c, err := ParseSession(b)
		if err != nil {
			t.Fatalf("ParseSession: %v", err)
		}
		if b2 := state(t, c); !bytes.Equal(b, b2) {
			t.Fatal("a parsed session marshals differently")
		}
		if c.ID() != (*s).ID() || c.Peer() != (*s).Peer() || c.Established() != (*s).Established() {
			t.Fatal("a parsed session differs")
		}
		*s = c // go on with the copy only
	}
	check(&p.a)
	hs := [][]byte{p.seal(p.a, "0"), p.seal(p.a, "1"), p.seal(p.a, "2")}
	check(&p.a)
	b, _, err := Accept(p.bob, hs[2], lookupOf(p.prekey), t0)
	if err != nil {
		t.Fatal(err)
	}
	p.b = b
	check(&p.b) // two skipped keys, a pending DH step
	p.open(p.b, hs[0], "0")
	check(&p.b)
	var held [][]byte
	for round := 0; round < 6; round++ {
		for i := 0; i < 3; i++ {
			env := p.seal(p.b, "b")
			check(&p.b)
			if i == 1 {
				held = append(held, env) // delivered at the end
				continue
			}
			p.open(p.a, env, "b")
			check(&p.a)
		}
		p.open(p.b, p.seal(p.a, "a"), "a")
		check(&p.a)
		check(&p.b)
	}
	for _, env := range held {
		p.open(p.a, env, "b")
		check(&p.a)
	}
	p.open(p.b, hs[1], "1")
	check(&p.b)
	if len(p.a.earlier) == 0 {
		t.Fatal("the test did not store earlier ratchet keys")
	}
}

func TestParseSessionRefuses(t *testing.T) {
	p := newPair(t)
	initiator := state(t, p.a) // with its prefix
	p.establish()
	p.seal(p.a, "skipped")
	p.open(p.b, p.seal(p.a, "m2"), "m2")
	good := state(t, p.b) // with a skipped key and an earlier ratchet key
	for _, b := range [][]byte{initiator, good} {
		if _, err := ParseSession(b); err != nil {
			t.Fatal(err)
		}
		for n := range len(b) {
			if _, err := ParseSession(b[:n]); !errors.Is(err, ErrMalformed) {
				t.Fatalf("cut to %d bytes: %v", n, err)
			}
		}
		if _, err := ParseSession(append(bytes.Clone(b), 0)); !errors.Is(err, ErrMalformed) {
			t.Fatalf("a byte appended: %v", err)
		}
	}
	set := func(b []byte, off int, v ...byte) []byte { c := bytes.Clone(b); copy(c[off:], v); return c }
	for name, b := range map[string][]byte{
		"magic":                     set(good, 0, 'X'),
		"version":                   set(good, 4, 2),
		"unknown flag":              set(good, 5, good[5]|0x20),
		"no DHr":                    set(good, 5, good[5]&^flagDHr),
		"CKr flagged absent":        set(good, 5, good[5]&^flagCKr),
		"responder with a prefix":   set(initiator, 5, initiator[5]&^flagInitiator),
		"established with prefix":   set(initiator, 5, initiator[5]|flagEstablished),
		"initiator without prefix":  set(good, 5, good[5]&^flagEstablished|flagInitiator),
		"prefix of another session": set(initiator, 70, initiator[70]^1),
		"too many earlier keys":     set(good, stateFixedLen, 0, maxEarlierDHr+1),
	} {
		if _, err := ParseSession(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
