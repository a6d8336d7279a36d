package session

import (
	"crypto/hmac"
	"crypto/hpke"
	"errors"
	"fmt"
	"time"

	"github.com/kez-lat/kez-chat/kez"
)

// Accept opens a handshake (type 1) addressed to me and returns the new
// session and the plaintext of the message it carries. lookup returns the
// private prekey the handshake names, if me still keeps it. The caller
// compares the handshake's sender ([ParseHeader]) with the one it expects
// (the NATS subject's sender) and looks the session ID up first: a
// handshake of a session it already has goes to that session's
// [Session.Open], which refuses a repeat. now dates the keys of messages
// skipped over.
//
// The checks and their errors are docs/spec/session.md §8.
func Accept(me *kez.Identity, envelope []byte, lookup func(prekeyID uint32) (*PrekeyPrivate, bool), now time.Time) (*Session, []byte, error) {
	if me == nil {
		return nil, nil, errors.New("session: Accept needs an identity")
	}
	var p parsed
	if err := parse(envelope, hybridSuite, &p); err != nil {
		return nil, nil, err
	}
	if p.typ != TypeHandshake {
		return nil, nil, fmt.Errorf("%w: Accept needs a handshake (type 1), got type %d", ErrMalformed, p.typ)
	}
	if p.recipient != me.PublicKey() {
		return nil, nil, fmt.Errorf("%w: the handshake is for %s", ErrWrongRecipient, p.recipient)
	}
	var k *PrekeyPrivate
	if lookup != nil {
		k, _ = lookup(p.prekeyID)
	}
	if k == nil || k.Public.ID != p.prekeyID || k.Public.Owner != me.PublicKey() {
		return nil, nil, fmt.Errorf("%w: prekey %d", ErrUnknownPrekey, p.prekeyID)
	}
	var ratchet [keyLen]byte
	copy(ratchet[:], k.RatchetKey().Bytes())
	s, pt, err := accept(me.PublicKey(), &p, hybridSuite, k.KEMKey(), &ratchet, now)
	clear(ratchet[:])
	return s, pt, err
}

// accept is Accept after the prekey lookup, for any KEM suite.
func accept(me kez.PublicKey, p *parsed, ks *kemSuite, kemKey hpke.PrivateKey, ratchetPriv *[keyLen]byte, now time.Time) (*Session, []byte, error) {
	if err := p.sender.Verify(handshakeContext, p.prefix[:len(p.prefix)-sigLen], p.sig); err != nil {
		return nil, nil, fmt.Errorf("%w: not signed by %s: %w", ErrBadSignature, p.sender, err)
	}
	sk, err := handshakeSecret(kemKey, p)
	if err != nil {
		return nil, nil, err
	}
	// RatchetInitBob: DHs is the prekey's ratchet key pair, RK = SK.
	s := &Session{me: me, peer: p.sender, hsHash: p.hsHash, dhsPriv: *ratchetPriv}
	copy(s.rk[:], sk)
	clear(sk)
	pub, err := publicKey(ratchetPriv)
	if err != nil {
		return nil, nil, fmt.Errorf("session: the prekey's ratchet key: %w", err)
	}
	s.dhsPub = pub
	pt, err := s.receive(p, now)
	if err != nil {
		return nil, nil, err
	}
	return s, pt, nil
}

// handshakeSecret decapsulates the handshake's enc and exports SK.
func handshakeSecret(kemKey hpke.PrivateKey, p *parsed) ([]byte, error) {
	fields := p.prefix[:offEnc]
	r, err := hpke.NewRecipient(p.enc, kemKey, hpke.HKDFSHA256(), hpke.ChaCha20Poly1305(), handshakeInfo(fields, p.initDH[:]))
	if err != nil {
		return nil, fmt.Errorf("%w: the handshake's KEM: %v", ErrDecrypt, err)
	}
	sk, err := r.Export(rootExportLabel, keyLen)
	if err != nil {
		return nil, fmt.Errorf("%w: HPKE export: %v", ErrDecrypt, err)
	}
	return sk, nil
}

// Open decrypts the next envelope of this session from the peer: a
// message (type 2), or a handshake (type 1) of this same session (its
// initiator sends those until it has heard from us). now dates skipped
// keys and expires old ones.
//
// The state changes only if Open succeeds: a refused envelope leaves s as
// it was. Persist s (MarshalBinary) together with what the message
// produced. The checks and their errors are docs/spec/session.md §8.
func (s *Session) Open(envelope []byte, now time.Time) ([]byte, error) {
	var p parsed
	if err := parse(envelope, hybridSuite, &p); err != nil {
		return nil, err
	}
	if p.recipient != s.me {
		return nil, fmt.Errorf("%w: the envelope is for %s", ErrWrongRecipient, p.recipient)
	}
	if p.sender != s.peer {
		return nil, fmt.Errorf("%w: the envelope is from %s, the session's peer is %s", ErrWrongSender, p.sender, s.peer)
	}
	if p.typ == TypeHandshake {
		if !hmac.Equal(p.hsHash[:], s.hsHash[:]) {
			return nil, fmt.Errorf("%w: a handshake of another session", ErrWrongSession)
		}
	} else if !hmac.Equal(p.sessionID[:], s.hsHash[:sidLen]) {
		return nil, fmt.Errorf("%w: session %x, this is %x", ErrWrongSession, p.sessionID, s.hsHash[:sidLen])
	}
	return s.receive(&p, now)
}

// receive is the Double Ratchet's RatchetDecrypt (docs/spec/session.md
// §7). It computes every change aside and applies them only once the
// message opened.
func (s *Session) receive(p *parsed, now time.Time) ([]byte, error) {
	nowMS := now.UnixMilli()

	// 1. A skipped key. Keys of the current chain have n < Nr, keys of
	// earlier chains another dh, so the common case skips the search.
	if !s.hasDHr || p.dh != s.dhr || p.n < s.nr {
		if i := s.findSkipped(&p.dh, p.n); i >= 0 {
			k := &s.skipped[i]
			if nowMS-k.at > SkippedKeyLifetime.Milliseconds() {
				return nil, fmt.Errorf("%w: the key of message %d was dropped after %v", ErrReplay, p.n, SkippedKeyLifetime)
			}
			pt, err := decrypt(&k.mk, p)
			if err != nil {
				return nil, err
			}
			last := len(s.skipped) - 1
			copy(s.skipped[i:], s.skipped[i+1:])
			s.skipped[last] = skippedKey{} // the key is used: erase it
			s.skipped = s.skipped[:last]
			s.received(nowMS)
			return pt, nil
		}
	}

	var (
		add     []skippedKey
		rk, ckr = s.rk, s.ckr
		step    = !s.hasDHr || p.dh != s.dhr
	)
	if !step {
		// 2. The current receiving chain.
		switch {
		case !s.hasCKr:
			return nil, fmt.Errorf("%w: no receiving chain under that ratchet key", ErrDecrypt)
		case p.n < s.nr:
			return nil, fmt.Errorf("%w: message %d of this chain was already received", ErrReplay, p.n)
		case p.n-s.nr > MaxSkip || p.n == ^uint32(0):
			return nil, fmt.Errorf("%w: message %d, the chain is at %d (at most %d skipped)", ErrTooFarAhead, p.n, s.nr, MaxSkip)
		}
		add = skipKeys(add, &ckr, p.dh, s.nr, p.n, nowMS)
	} else {
		// 3. A chain that is over.
		for i := range s.earlier {
			if s.earlier[i] == p.dh {
				return nil, fmt.Errorf("%w: message %d of an earlier chain", ErrReplay, p.n)
			}
		}
		// 4. A DH ratchet step.
		if s.hasCKr && p.pn > s.nr && p.pn-s.nr > MaxSkip {
			return nil, fmt.Errorf("%w: the previous chain ended at %d, it is at %d (at most %d skipped)", ErrTooFarAhead, p.pn, s.nr, MaxSkip)
		}
		if p.n > MaxSkip {
			return nil, fmt.Errorf("%w: message %d of a new chain (at most %d skipped)", ErrTooFarAhead, p.n, MaxSkip)
		}
		if s.hasCKr {
			add = skipKeys(add, &ckr, s.dhr, s.nr, p.pn, nowMS)
		}
		dh, err := x25519(&s.dhsPriv, &p.dh)
		if err != nil {
			return nil, fmt.Errorf("%w: the message's ratchet key: %v", ErrDecrypt, err)
		}
		rk, ckr = kdfRK(&rk, dh)
		clear(dh)
		add = skipKeys(add, &ckr, p.dh, 0, p.n, nowMS)
	}
	// 5, 6. This message's key.
	nextCKr, mk := kdfCK(&ckr)
	pt, err := decrypt(&mk, p)
	clear(mk[:])
	if err != nil {
		return nil, err
	}

	if step {
		if s.hasDHr {
			s.earlier = append(s.earlier, s.dhr)
			if len(s.earlier) > maxEarlierDHr {
				s.earlier = append(s.earlier[:0], s.earlier[len(s.earlier)-maxEarlierDHr:]...)
			}
		}
		if s.hasCKs {
			s.pn, s.ns = s.ns, 0
			clear(s.cks[:])
		}
		s.hasCKs = false
		s.dhr, s.hasDHr, s.rk = p.dh, true, rk
	}
	s.ckr, s.hasCKr, s.nr = nextCKr, true, p.n+1
	s.skipped = append(s.skipped, add...)
	s.received(nowMS)
	return pt, nil
}

// skipKeys advances ck from message from to message to (exclusive) of the
// chain under dh, appending each message key to add.
func skipKeys(add []skippedKey, ck *[keyLen]byte, dh [keyLen]byte, from, to uint32, nowMS int64) []skippedKey {
	for n := from; n < to; n++ {
		next, mk := kdfCK(ck)
		add = append(add, skippedKey{dh: dh, n: n, mk: mk, at: nowMS})
		*ck = next
	}
	return add
}

// received finishes a successful open: the session is established, and the
// skipped keys are kept within their bounds.
func (s *Session) received(nowMS int64) {
	s.established = true
	s.prefix = nil
	keep := s.skipped
	// Keys are stored in time order, so the first is the oldest; only
	// when it expired are the others looked at. (After the clock went
	// back a key may outlive its time here, but never opens: the lookup
	// checks its age.)
	if len(keep) > 0 && nowMS-keep[0].at > SkippedKeyLifetime.Milliseconds() {
		keep = keep[:0]
		for _, k := range s.skipped {
			if nowMS-k.at <= SkippedKeyLifetime.Milliseconds() {
				keep = append(keep, k)
			}
		}
	}
	if over := len(keep) - MaxSkippedKeys; over > 0 {
		keep = append(keep[:0], keep[over:]...)
	}
	clear(s.skipped[len(keep):])
	s.skipped = keep
}

func (s *Session) findSkipped(dh *[keyLen]byte, n uint32) int {
	for i := range s.skipped {
		if s.skipped[i].n == n && s.skipped[i].dh == *dh {
			return i
		}
	}
	return -1
}

// decrypt opens the message's ciphertext with its message key.
func decrypt(mk *[keyLen]byte, p *parsed) ([]byte, error) {
	// One allocation holds the associated data (§6), then the plaintext.
	ad := make([]byte, 0, adLen+len(p.header)+len(p.ct)-tagLen)
	ad = appendAssociatedData(ad, p.sender[:], p.recipient[:], p.header)
	pt, err := messageAEAD(mk).Open(ad[len(ad):], messageNonce[:], p.ct, ad)
	if err != nil {
		return nil, fmt.Errorf("%w: message %d", ErrDecrypt, p.n)
	}
	return pt, nil
}
