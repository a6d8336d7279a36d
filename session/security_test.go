package session

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	"github.com/kez-lat/kez-chat/internal/testenv/vectorid"
)

// The attacker of these tests holds a party's whole stored state (and its
// primary key, which plays no part in the ratchet) and every envelope
// ever sent, and tries every key it can derive from that state on every
// envelope.

// attackerKeys returns every message key an attacker holding the stored
// state st can try: each 32-byte window of st, taken as a message key and
// as a chain key advanced up to depth steps; and the chains a DH ratchet
// step would give from the state's root key, its ratchet private key and
// each ratchet public key seen on the wire (the real DH computation).
func attackerKeys(tb testing.TB, st []byte, wire [][]byte, depth int) [][keyLen]byte {
	tb.Helper()
	var keys [][keyLen]byte
	chain := func(ck [keyLen]byte) {
		for range depth {
			next, mk := kdfCK(&ck)
			keys = append(keys, mk)
			ck = next
		}
	}
	for off := 0; off+keyLen <= len(st); off++ {
		var k [keyLen]byte
		copy(k[:], st[off:])
		keys = append(keys, k)
		chain(k)
	}
	s, err := ParseSession(st)
	if err != nil {
		tb.Fatal(err)
	}
	for _, env := range wire {
		var p parsed
		if parse(env, hybridSuite, &p) != nil {
			continue
		}
		for _, priv := range [][keyLen]byte{s.dhsPriv} {
			if dh, err := x25519(&priv, &p.dh); err == nil {
				_, ck := kdfRK(&s.rk, dh)
				chain(ck)
			}
		}
	}
	return keys
}

// opensWith reports which of wire some key opens.
func opensWith(keys [][keyLen]byte, wire [][]byte) []int {
	var opened []int
	for i, env := range wire {
		var p parsed
		if parse(env, hybridSuite, &p) != nil {
			continue
		}
		for k := range keys {
			if _, err := decrypt(&keys[k], &p); err == nil {
				opened = append(opened, i)
				break
			}
		}
	}
	return opened
}

// TestForwardSecrecy: after DH ratchet steps, bob's whole current state
// opens none of the envelopes sent before the last step, but the one he
// never received (its key is stored as skipped); of the later ones, only
// the one his current receiving chain has not reached yet. That it finds
// those two shows that the search finds the keys that are there.
func TestForwardSecrecy(t *testing.T) {
	p := newPair(t)
	var before, after [][]byte
	send := func(from, _ *Session, msg string, list *[][]byte) []byte {
		env := p.seal(from, msg)
		*list = append(*list, env)
		return env
	}
	hs := send(p.a, nil, "handshake", &before)
	b, _, err := Accept(p.bob, hs, lookupOf(p.prekey), t0)
	if err != nil {
		t.Fatal(err)
	}
	p.b = b
	for round := 0; round < 3; round++ {
		for i := 0; i < 3; i++ {
			p.open(p.a, send(p.b, p.a, "to alice", &before), "to alice")
		}
		for i := 0; i < 3; i++ {
			p.open(p.b, send(p.a, p.b, "to bob", &before), "to bob")
		}
	}
	missed := send(p.a, p.b, "never delivered", &before)
	p.open(p.b, send(p.a, p.b, "to bob", &before), "to bob")
	// The last DH steps: bob sends under a new key, alice answers under
	// a new key, bob receives it.
	p.open(p.a, send(p.b, p.a, "bob's new chain", &before), "bob's new chain")
	p.open(p.b, send(p.a, p.b, "alice's new chain", &after), "alice's new chain")
	next := send(p.a, p.b, "current receiving chain", &after)
	p.open(p.a, send(p.b, p.a, "current sending chain", &after), "current sending chain")

	st := state(t, p.b)
	wire := append(append([][]byte{}, before...), after...)
	keys := attackerKeys(t, st, wire, 8)
	opened := opensWith(keys, wire)
	missedAt := -1
	for i, env := range wire {
		if bytes.Equal(env, missed) {
			missedAt = i
		}
	}
	// Exactly two open: the message bob never received (its key is
	// kept, skipped) and the next one of his current receiving chain. Not
	// the messages of that chain he received, nor those he sent, even in
	// his current sending chain.
	if want := []int{missedAt, len(before) + 1}; !slices.Equal(opened, want) {
		t.Fatalf("bob's current state opens envelopes %v of %d; want exactly %v", opened, len(wire), want)
	}
	// The state itself refuses them all, of course.
	s, err := ParseSession(st)
	if err != nil {
		t.Fatal(err)
	}
	for i, env := range before {
		if i == 0 || env[5] != TypeMessage || bytes.Equal(env, missed) || !bytes.Equal(env[offRecipient:offRecipient+keyLen], p.bob.PublicKey().Ed25519()) {
			continue
		}
		if _, err := s.Open(env, t0); !errors.Is(err, ErrReplay) {
			t.Errorf("envelope %d again: %v", i, err)
		}
	}
	if _, err := s.Open(next, t0); err != nil {
		t.Fatal(err)
	}
	// With prekey 7 rotated out and deleted, the handshake is unreadable
	// with everything bob has: his words (the identity), his newer prekey,
	// and his state (above).
	rotated := testPrekey(t, vectorid.Identity(t, "bob"), 8)
	if _, _, err := Accept(p.bob, hs, lookupOf(rotated), t0); !errors.Is(err, ErrUnknownPrekey) {
		t.Fatalf("the handshake to a deleted prekey: %v", err)
	}
	if _, _, err := Accept(p.bob, hs, func(uint32) (*PrekeyPrivate, bool) { r := *rotated; r.Public.ID = 7; return &r, true }, t0); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("the handshake opened with another prekey's keys: %v", err)
	}
}

// TestPostCompromise: an attacker who copied a party's state keeps up with
// the conversation only until that party makes a DH ratchet step with
// randomness the attacker did not see.
func TestPostCompromise(t *testing.T) {
	for _, side := range []string{"alice", "bob"} {
		t.Run(side, func(t *testing.T) {
			p := newPair(t)
			p.establish()
			for i := 0; i < 2; i++ {
				p.open(p.b, p.seal(p.a, "a"), "a")
				p.open(p.a, p.seal(p.b, "b"), "b")
			}
			victim, peer := &p.a, &p.b
			if side == "bob" {
				victim, peer = &p.b, &p.a
			}
			// The victim has just sent, so its sending chain is in the copy.
			p.open(*peer, p.seal(*victim, "before the copy"), "before the copy")
			stolen := state(t, *victim)

			// Control: the copy opens what the victim sends in that chain.
			same := p.seal(*victim, "same chain")
			if opened := opensWith(attackerKeys(t, stolen, [][]byte{same}, 4), [][]byte{same}); len(opened) != 1 {
				t.Fatal("the attacker's search does not open a message of the stolen chain")
			}
			p.open(*peer, same, "same chain")

			// The peer's DH step, then the victim's, with fresh randomness.
			fromPeer := p.seal(*peer, "peer steps")
			p.open(*victim, fromPeer, "peer steps")
			fresh := p.seal(*victim, "victim steps with fresh randomness")
			p.open(*peer, fresh, "victim steps with fresh randomness")
			reply := p.seal(*peer, "peer answers the new key")

			// The attacker follows with its copy: it can open the peer's
			// step (it has the state that receives it)...
			copyS, err := ParseSession(stolen)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := copyS.Open(fromPeer, t0); err != nil {
				t.Fatalf("the stolen state does not follow the peer's step: %v", err)
			}
			// ...but nothing after the victim's fresh step.
			wire := [][]byte{fresh, reply}
			if opened := opensWith(attackerKeys(t, state(t, copyS), wire, 8), wire); len(opened) != 0 {
				t.Fatalf("the stolen state opens %v after the victim's DH step", opened)
			}
			if _, err := copyS.Open(reply, t0); !errors.Is(err, ErrDecrypt) {
				t.Fatalf("the stolen state opens the peer's answer: %v", err)
			}
			// Sealing with its own randomness does not put it back in.
			if _, err := copyS.Seal(newSeeded("attacker"), []byte("x")); err != nil {
				t.Fatal(err)
			}
			if opened := opensWith(attackerKeys(t, state(t, copyS), wire, 8), wire); len(opened) != 0 {
				t.Fatalf("the stolen state opens %v after sealing", opened)
			}
			p.open(*victim, reply, "peer answers the new key")
		})
	}
}
