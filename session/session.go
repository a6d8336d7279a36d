package session

import (
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/kez-lat/kez-chat/kez"
)

// Session is one Double Ratchet session with one peer
// (docs/spec/session.md): made by [Initiate] on the side that starts it and
// by [Accept] on the side that receives its handshake, then used with
// [Session.Seal] and [Session.Open], and stored with
// [Session.MarshalBinary] between uses.
//
// A Session holds secrets (its ratchet keys); store it only where its
// owner alone can read it. It is not safe for concurrent use.
type Session struct {
	me, peer    kez.PublicKey
	hsHash      [sha256.Size]byte // SHA-256 of the handshake prefix; the ID is its first 16 bytes
	initiator   bool
	established bool   // a message from the peer was opened
	prefix      []byte // the handshake prefix, kept by the initiator until established

	dhsPriv, dhsPub [keyLen]byte // DHs
	dhr             [keyLen]byte // DHr
	hasDHr          bool
	rk              [keyLen]byte
	cks, ckr        [keyLen]byte
	hasCKs, hasCKr  bool // CKs absent: a DH ratchet step is due at the next Seal
	ns, nr, pn      uint32

	earlier [][keyLen]byte // the peer's earlier ratchet keys, oldest first
	skipped []skippedKey   // oldest first
}

// skippedKey is the message key of a message not yet received.
type skippedKey struct {
	dh [keyLen]byte
	n  uint32
	mk [keyLen]byte
	at int64 // when it was stored, Unix milliseconds
}

// ID returns the session ID: the first 16 bytes of the SHA-256 of the
// handshake prefix. Messages (type 2) carry it.
func (s *Session) ID() [16]byte {
	var id [16]byte
	copy(id[:], s.hsHash[:])
	return id
}

// Peer returns the other party's primary key.
func (s *Session) Peer() kez.PublicKey { return s.peer }

// Established reports whether a message from the peer was opened in this
// session. Until then its initiator's Seal makes handshakes (type 1).
func (s *Session) Established() bool { return s.established }

// Initiate starts a session from me to the owner of peer, a prekey record
// the caller fetched and verified ([Prekey.Verify]) for the key it means
// to reach. It encapsulates to the prekey's hybrid KEM key and signs the
// handshake; nothing is sent until [Session.Seal]. rand supplies the
// initiator's first ratchet key (crypto/rand if nil); the KEM
// encapsulation draws from crypto/rand. now only refuses an expired
// prekey.
func Initiate(rand io.Reader, me *kez.Identity, peer *Prekey, now time.Time) (*Session, error) {
	if me == nil || peer == nil {
		return nil, errors.New("session: Initiate needs an identity and a prekey")
	}
	if !now.IsZero() && !now.Before(peer.Expires) {
		return nil, fmt.Errorf("%w: prekey %d of %s expired at %s", ErrPrekeyExpired, peer.ID, peer.Owner, peer.Expires.Format(time.RFC3339))
	}
	kemPub, err := hybridSuite.kem.NewPublicKey(peer.KEMPublic)
	if err != nil {
		return nil, fmt.Errorf("%w: KEM public key: %v", ErrMalformedPrekey, err)
	}
	return initiate(rand, me, peer.Owner, peer.ID, hybridSuite, kemPub, &peer.RatchetPublic)
}

// initiate is Initiate for any KEM suite (the benchmarks compare two).
func initiate(rnd io.Reader, me *kez.Identity, to kez.PublicKey, prekeyID uint32, ks *kemSuite, kemPub hpke.PublicKey, ratchetPub *[keyLen]byte) (*Session, error) {
	a, initDH, err := newRatchetKey(rnd)
	if err != nil {
		return nil, err
	}
	fields := appendHandshakeFields(make([]byte, 0, ks.prefixLen()), ks, me.PublicKey(), to, prekeyID)
	sender, enc, err := hpkeSender(kemPub, handshakeInfo(fields, initDH[:]))
	if err != nil {
		return nil, fmt.Errorf("session: encapsulating to the prekey of %s: %w", to, err)
	}
	sk, err := sender.Export(rootExportLabel, keyLen)
	if err != nil {
		return nil, fmt.Errorf("session: HPKE export: %w", err)
	}
	return newInitiator(me, fields, enc, &a, &initDH, sk, ratchetPub)
}

func hpkeSender(pk hpke.PublicKey, info []byte) (*hpke.Sender, []byte, error) {
	enc, s, err := hpke.NewSender(pk, hpke.HKDFSHA256(), hpke.ChaCha20Poly1305(), info)
	return s, enc, err
}

// newInitiator completes the handshake prefix after the KEM (fields from
// magic through enc_len, then enc, init_dh and the signature) and
// initialises the initiator's ratchet (RatchetInitAlice).
func newInitiator(me *kez.Identity, fields, enc []byte, a, initDH *[keyLen]byte, sk []byte, ratchetPub *[keyLen]byte) (*Session, error) {
	prefix := append(fields, enc...)
	prefix = append(prefix, initDH[:]...)
	sig, err := me.Sign(handshakeContext, prefix)
	if err != nil {
		return nil, fmt.Errorf("session: signing the handshake: %w", err)
	}
	prefix = append(prefix, sig...)
	s := &Session{
		me: me.PublicKey(), hsHash: sha256.Sum256(prefix), initiator: true, prefix: prefix,
		dhsPriv: *a, dhsPub: *initDH, dhr: *ratchetPub, hasDHr: true,
	}
	copy(s.peer[:], fields[offRecipient:])
	dh, err := x25519(a, ratchetPub)
	if err != nil {
		return nil, fmt.Errorf("%w: the prekey's ratchet key: %v", ErrMalformedPrekey, err)
	}
	var root [keyLen]byte
	copy(root[:], sk)
	s.rk, s.cks = kdfRK(&root, dh)
	s.hasCKs = true
	clear(root[:])
	clear(dh)
	return s, nil
}

// newRatchetKey reads an X25519 private key (32 bytes) from rnd and
// returns it with its public key.
func newRatchetKey(rnd io.Reader) (priv, pub [keyLen]byte, err error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	if _, err := io.ReadFull(rnd, priv[:]); err != nil {
		return priv, pub, fmt.Errorf("session: reading randomness for a ratchet key: %w", err)
	}
	pub, err = publicKey(&priv)
	return priv, pub, err
}

// publicKey returns the X25519 public key of priv.
func publicKey(priv *[keyLen]byte) (pub [keyLen]byte, err error) {
	k, err := ecdh.X25519().NewPrivateKey(priv[:])
	if err != nil {
		return pub, fmt.Errorf("session: ratchet key: %w", err)
	}
	copy(pub[:], k.PublicKey().Bytes())
	return pub, nil
}

// Seal encrypts plaintext as the session's next message to the peer and
// returns the envelope. Until a message from the peer has been opened
// ([Session.Established]), the initiator's envelopes are handshakes (type
// 1: the handshake, then this message); after that they are messages
// (type 2). When a DH ratchet step is due (the peer's new ratchet key was
// received), Seal reads the new ratchet key, 32 bytes, from rand
// (crypto/rand if nil).
//
// Seal changes s: persist s (MarshalBinary) together with the envelope
// before publishing it, so that a crash cannot make a message key seal two
// different messages. On error s is unchanged.
func (s *Session) Seal(rand io.Reader, plaintext []byte) ([]byte, error) {
	handshake := s.initiator && !s.established
	hl := msgHeaderLen
	if handshake {
		hl = len(s.prefix) + ratchetHdrLen
	}
	if size := hl + len(plaintext) + tagLen; size > MaxEnvelopeSize {
		return nil, fmt.Errorf("%w: the envelope would be %d bytes, at most %d allowed", ErrTooLarge, size, MaxEnvelopeSize)
	}
	if s.ns == math.MaxUint32 {
		return nil, errors.New("session: the sending chain is exhausted; start a new session")
	}
	if !s.hasDHr {
		return nil, errors.New("session: no peer ratchet key to send to")
	}
	rk, cks, dhsPriv, dhsPub := s.rk, s.cks, s.dhsPriv, s.dhsPub
	if !s.hasCKs { // the sending half of a DH ratchet step
		var err error
		if dhsPriv, dhsPub, err = newRatchetKey(rand); err != nil {
			return nil, err
		}
		dh, err := x25519(&dhsPriv, &s.dhr)
		if err != nil {
			return nil, fmt.Errorf("%w: the peer's ratchet key: %v", ErrDecrypt, err)
		}
		rk, cks = kdfRK(&rk, dh)
		clear(dh)
	}
	next, mk := kdfCK(&cks)

	// One allocation holds the associated data (§6), whose tail is the
	// header, followed by the ciphertext: ad = buf[:adLen+hl] and the
	// envelope is buf[adLen:].
	buf := make([]byte, 0, adLen+hl+len(plaintext)+tagLen)
	buf = appendAssociatedData(buf, s.me[:], s.peer[:], nil)
	if handshake {
		buf = append(buf, s.prefix...)
	} else {
		buf = append(buf, magic...)
		buf = append(buf, version, TypeMessage)
		buf = append(buf, s.me[:]...)
		buf = append(buf, s.peer[:]...)
		buf = append(buf, s.hsHash[:sidLen]...)
	}
	buf = appendRatchetHeader(buf, &dhsPub, s.pn, s.ns)
	buf = messageAEAD(&mk).Seal(buf, messageNonce[:], plaintext, buf)
	out := buf[adLen:]
	clear(mk[:])

	if dhsPriv != s.dhsPriv {
		clear(s.dhsPriv[:])
	}
	s.rk, s.cks, s.hasCKs, s.dhsPriv, s.dhsPub = rk, next, true, dhsPriv, dhsPub
	s.ns++
	return out, nil
}
