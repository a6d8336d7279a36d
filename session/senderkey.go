package session

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/kez-lat/kez-chat/kez"
)

// Sender keys (docs/spec/senderkeys.md): Signal's group messaging design.
// Each device sending to a group at an epoch has one [SenderKey] (a hash
// chain and a signing key); every other member device holds a
// [ReceiverKey] made from its [SenderKeyDistribution], received inside the
// pairwise session. One sealed envelope then reaches every member.

// DistributionLen is the length of a marshalled [SenderKeyDistribution].
const DistributionLen = 1 + 32 + 8 + keyLen + 4 + keyLen + keyLen // 141

const (
	distributionVersion = 1

	senderKeyMagic     = "KEZK" // the stored form of a SenderKey
	receiverKeyMagic   = "KEZR" // the stored form of a ReceiverKey
	senderStateVersion = 1
	senderKeyLen       = 4 + 1 + 32 + 8 + keyLen + 4 + keyLen + ed25519.SeedSize              // 145
	receiverFixedLen   = 4 + 1 + 32 + 8 + keyLen + ed25519.PublicKeySize + 4 + 4 + keyLen + 2 // 155
	receiverSkipLen    = 4 + keyLen
)

// SenderKeyDistribution gives a member device what it needs to read one
// sender's group messages from an iteration on: the chain key at that
// iteration and the public half of the sender key's signing key. It is
// sent inside the pairwise session (chat kind group-key) and holds a
// secret: never send it any other way.
type SenderKeyDistribution struct {
	GID        [32]byte
	Epoch      uint64
	Device     kez.PublicKey // the sending device
	Iteration  uint32        // the first iteration the chain key opens
	ChainKey   [32]byte
	SigningKey [ed25519.PublicKeySize]byte // the sender key's own ed25519 key, not the device's
}

// MarshalBinary returns the distribution's 141 bytes
// (docs/spec/senderkeys.md §4).
func (d *SenderKeyDistribution) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, DistributionLen)
	b = append(b, distributionVersion)
	b = append(b, d.GID[:]...)
	b = binary.BigEndian.AppendUint64(b, d.Epoch)
	b = append(b, d.Device[:]...)
	b = binary.BigEndian.AppendUint32(b, d.Iteration)
	b = append(b, d.ChainKey[:]...)
	return append(b, d.SigningKey[:]...), nil
}

// ParseSenderKeyDistribution reads a distribution made by
// [SenderKeyDistribution.MarshalBinary]. Errors wrap [ErrMalformed] or
// [ErrUnsupportedVersion].
func ParseSenderKeyDistribution(b []byte) (*SenderKeyDistribution, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty sender key distribution", ErrMalformed)
	}
	if b[0] != distributionVersion {
		return nil, fmt.Errorf("%w: sender key distribution version %d", ErrUnsupportedVersion, b[0])
	}
	if len(b) != DistributionLen {
		return nil, fmt.Errorf("%w: sender key distribution of %d bytes, want %d", ErrMalformed, len(b), DistributionLen)
	}
	d := new(SenderKeyDistribution)
	b = b[1:]
	b = b[copy(d.GID[:], b):]
	d.Epoch, b = binary.BigEndian.Uint64(b), b[8:]
	b = b[copy(d.Device[:], b):]
	d.Iteration, b = binary.BigEndian.Uint32(b), b[4:]
	b = b[copy(d.ChainKey[:], b):]
	copy(d.SigningKey[:], b)
	if d.Device.IsZero() {
		return nil, fmt.Errorf("%w: sender key distribution without a device", ErrMalformed)
	}
	if smallOrder(&d.SigningKey) {
		return nil, fmt.Errorf("%w: sender key distribution with a small-order signing key", ErrMalformed)
	}
	return d, nil
}

// smallOrderKeys are the encodings of the ed25519 points of order 1, 2, 4
// and 8, with y = p and y = p+1 (non-canonical 0 and 1), the sign bit
// cleared: libsodium's blocklist. Under such a key one fixed signature
// verifies every message (the identity, s = 0), so it authenticates
// nothing.
var smallOrderKeys = [...][32]byte{
	{0x00}, // 0, order 4
	{0x01}, // 1, order 1 (the identity)
	{0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98, 0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53, 0xfc, 0x05}, // order 8
	{0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67, 0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac, 0x03, 0x7a}, // order 8
	{0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, // p-1, order 2
	{0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, // p = 0
	{0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, // p+1 = 1
}

// smallOrder reports whether k encodes a point of small order (any sign
// bit), a signing key that authenticates nothing.
func smallOrder(k *[ed25519.PublicKeySize]byte) bool {
	c := *k
	c[31] &= 0x7f
	for i := range smallOrderKeys {
		if c == smallOrderKeys[i] {
			return true
		}
	}
	return false
}

// SenderKey is this device's sending state in one group at one epoch: the
// chain key of the next message, its iteration and the signing key.
//
// A SenderKey holds secrets; store it ([SenderKey.MarshalBinary]) only
// where its owner alone can read it. It is not safe for concurrent use.
type SenderKey struct {
	gid       [32]byte
	epoch     uint64
	device    kez.PublicKey
	iteration uint32
	ck        [keyLen]byte
	sign      ed25519.PrivateKey
}

// NewSenderKey makes a fresh sender key for device in group gid at epoch:
// it reads the chain key (32 bytes) and then the signing key's seed (32
// bytes) from rnd (crypto/rand if nil). The iteration starts at 0.
func NewSenderKey(rnd io.Reader, gid [32]byte, epoch uint64, device kez.PublicKey) (*SenderKey, error) {
	if device.IsZero() {
		return nil, errors.New("session: a sender key needs a device key")
	}
	if rnd == nil {
		rnd = rand.Reader
	}
	var seed [keyLen + ed25519.SeedSize]byte
	if _, err := io.ReadFull(rnd, seed[:]); err != nil {
		return nil, fmt.Errorf("session: sender key randomness: %w", err)
	}
	k := &SenderKey{gid: gid, epoch: epoch, device: device, sign: ed25519.NewKeyFromSeed(seed[keyLen:])}
	copy(k.ck[:], seed[:keyLen])
	clear(seed[:])
	return k, nil
}

// GID returns the group the key sends to.
func (k *SenderKey) GID() [32]byte { return k.gid }

// Epoch returns the membership epoch the key belongs to.
func (k *SenderKey) Epoch() uint64 { return k.epoch }

// Device returns the sending device.
func (k *SenderKey) Device() kez.PublicKey { return k.device }

// Iteration returns the iteration the next [SenderKey.Seal] uses.
func (k *SenderKey) Iteration() uint32 { return k.iteration }

// Distribution returns the distribution of the key at its current
// iteration: its reader opens this message and every later one, never an
// earlier one.
func (k *SenderKey) Distribution() *SenderKeyDistribution {
	d := &SenderKeyDistribution{GID: k.gid, Epoch: k.epoch, Device: k.device, Iteration: k.iteration, ChainKey: k.ck}
	copy(d.SigningKey[:], k.sign.Public().(ed25519.PublicKey))
	return d
}

// Seal encrypts plaintext as the key's next group message and returns the
// version-3 envelope (docs/spec/senderkeys.md §6), then advances the chain
// and forgets the message key.
//
// Seal changes k: persist k together with the envelope before publishing
// it, so that a crash cannot make one message key seal two messages. On
// error k is unchanged.
func (k *SenderKey) Seal(plaintext []byte) ([]byte, error) {
	if len(plaintext) > MaxGroupPlaintextSize {
		return nil, fmt.Errorf("%w: the envelope would be %d bytes, at most %d allowed", ErrTooLarge, groupMinLen+len(plaintext), MaxEnvelopeSize)
	}
	if k.iteration == math.MaxUint32 {
		return nil, errors.New("session: the sender key is exhausted; make a new one at a new epoch")
	}
	next, mk := kdfCK(&k.ck)
	aead, nonce := groupAEAD(&mk)
	clear(mk[:])
	buf := make([]byte, 0, groupMinLen+len(plaintext))
	buf = appendGroupHeader(buf, &k.gid, k.epoch, k.device, k.iteration)
	buf = aead.Seal(buf, nonce, plaintext, buf)
	buf = signGroup(k.sign, buf)
	k.ck = next
	k.iteration++
	return buf, nil
}

// MarshalBinary returns the key's stored form, secrets included
// (docs/spec/senderkeys.md §9). [ParseSenderKey] reads it back.
func (k *SenderKey) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, senderKeyLen)
	b = append(b, senderKeyMagic...)
	b = append(b, senderStateVersion)
	b = append(b, k.gid[:]...)
	b = binary.BigEndian.AppendUint64(b, k.epoch)
	b = append(b, k.device[:]...)
	b = binary.BigEndian.AppendUint32(b, k.iteration)
	b = append(b, k.ck[:]...)
	return append(b, k.sign.Seed()...), nil
}

// ParseSenderKey reads a stored sender key made by
// [SenderKey.MarshalBinary]. Errors wrap [ErrMalformed] or
// [ErrUnsupportedVersion].
func ParseSenderKey(b []byte) (*SenderKey, error) {
	if len(b) < 5 || string(b[:4]) != senderKeyMagic {
		return nil, fmt.Errorf("%w: not a stored sender key", ErrMalformed)
	}
	if b[4] != senderStateVersion {
		return nil, fmt.Errorf("%w: stored sender key version %d", ErrUnsupportedVersion, b[4])
	}
	if len(b) != senderKeyLen {
		return nil, fmt.Errorf("%w: stored sender key of %d bytes, want %d", ErrMalformed, len(b), senderKeyLen)
	}
	k := new(SenderKey)
	b = b[5:]
	b = b[copy(k.gid[:], b):]
	k.epoch, b = binary.BigEndian.Uint64(b), b[8:]
	b = b[copy(k.device[:], b):]
	k.iteration, b = binary.BigEndian.Uint32(b), b[4:]
	b = b[copy(k.ck[:], b):]
	if k.device.IsZero() {
		return nil, fmt.Errorf("%w: stored sender key without a device", ErrMalformed)
	}
	k.sign = ed25519.NewKeyFromSeed(b)
	return k, nil
}

// ReceiverKey reads one sender's group messages at one epoch: made from
// that sender's [SenderKeyDistribution], it opens the distribution's
// iteration and later ones, each once.
//
// A ReceiverKey holds secrets; store it ([ReceiverKey.MarshalBinary]) only
// where its owner alone can read it. It is not safe for concurrent use.
type ReceiverKey struct {
	gid     [32]byte
	epoch   uint64
	device  kez.PublicKey
	signing [ed25519.PublicKeySize]byte
	first   uint32 // the distribution's iteration: nothing before it opens
	next    uint32 // the iteration ck is at
	ck      [keyLen]byte
	skipped []groupSkipped // ascending iterations, all in [first, next)
}

// groupSkipped is the message key of a group message not yet received.
type groupSkipped struct {
	n  uint32
	mk [keyLen]byte
}

// NewReceiverKey makes the receiver key of a distribution. The caller
// checks first that the distribution came, inside the pairwise session,
// from its Device, a current member's device (docs/spec/senderkeys.md §3).
func NewReceiverKey(d *SenderKeyDistribution) *ReceiverKey {
	return &ReceiverKey{gid: d.GID, epoch: d.Epoch, device: d.Device, signing: d.SigningKey, first: d.Iteration, next: d.Iteration, ck: d.ChainKey}
}

// GID returns the group of the sender key.
func (r *ReceiverKey) GID() [32]byte { return r.gid }

// Epoch returns the membership epoch of the sender key.
func (r *ReceiverKey) Epoch() uint64 { return r.epoch }

// Device returns the sending device.
func (r *ReceiverKey) Device() kez.PublicKey { return r.device }

// Iteration returns the next iteration in order: every later one is
// ahead, every earlier one was received, skipped or is before the
// distribution.
func (r *ReceiverKey) Iteration() uint32 { return r.next }

// Open checks and decrypts a group envelope of the receiver key's sender
// (docs/spec/senderkeys.md §7, in that order): its structure, group,
// epoch and device ([ErrWrongGroup], [ErrWrongSender]), the signature
// ([ErrBadSignature]), the iteration ([ErrOlderThanKey], [ErrReplay],
// [ErrTooFarAhead]) and the ciphertext ([ErrDecrypt]).
//
// The state changes only if Open succeeds: the message key used is
// deleted, so the same envelope again is [ErrReplay]. Persist r together
// with what the message produced.
func (r *ReceiverKey) Open(envelope []byte) ([]byte, error) {
	h, err := ParseGroupHeader(envelope)
	if err != nil {
		return nil, err
	}
	if h.GID != r.gid {
		return nil, fmt.Errorf("%w: group %x, the key's is %x", ErrWrongGroup, h.GID[:8], r.gid[:8])
	}
	if h.Epoch != r.epoch {
		return nil, fmt.Errorf("%w: epoch %d, the key's is %d", ErrWrongGroup, h.Epoch, r.epoch)
	}
	if h.Device != r.device {
		return nil, fmt.Errorf("%w: the envelope is from %s, the sender key's device is %s", ErrWrongSender, h.Device, r.device)
	}
	if smallOrder(&r.signing) {
		return nil, fmt.Errorf("%w: the sender key's signing key has small order", ErrBadSignature)
	}
	end := len(envelope) - sigLen
	if err := kez.PublicKey(r.signing).Verify(groupSigContext, envelope[:end], envelope[end:]); err != nil {
		return nil, fmt.Errorf("%w: group message %d: %w", ErrBadSignature, h.Iteration, err)
	}
	n := h.Iteration
	switch {
	case n < r.first:
		return nil, fmt.Errorf("%w: message %d, the key opens %d on", ErrOlderThanKey, n, r.first)
	case n < r.next:
		i := r.findSkipped(n)
		if i < 0 {
			return nil, fmt.Errorf("%w: group message %d", ErrReplay, n)
		}
		pt, err := openGroup(&r.skipped[i].mk, envelope, n)
		if err != nil {
			return nil, err
		}
		last := len(r.skipped) - 1
		copy(r.skipped[i:], r.skipped[i+1:])
		r.skipped[last] = groupSkipped{} // the key is used: erase it
		r.skipped = r.skipped[:last]
		return pt, nil
	case n-r.next > MaxSenderKeySkip:
		return nil, fmt.Errorf("%w: message %d, %d ahead of %d (at most %d)", ErrTooFarAhead, n, n-r.next, r.next, MaxSenderKeySkip)
	}
	// Derive aside: the chain moves only once the message opened.
	ck := r.ck
	var add []groupSkipped
	if n > r.next {
		add = make([]groupSkipped, 0, n-r.next)
	}
	for i := r.next; i < n; i++ {
		next, mk := kdfCK(&ck)
		add = append(add, groupSkipped{n: i, mk: mk})
		ck = next
	}
	next, mk := kdfCK(&ck)
	pt, err := openGroup(&mk, envelope, n)
	clear(mk[:])
	if err != nil {
		clear(next[:])
		for i := range add {
			clear(add[i].mk[:])
		}
		return nil, err
	}
	r.ck, r.next = next, n+1
	r.skipped = append(r.skipped, add...)
	if over := len(r.skipped) - MaxSenderKeySkip; over > 0 { // drop the lowest
		n := copy(r.skipped, r.skipped[over:])
		clear(r.skipped[n:]) // erase the dropped keys and the moved copies
		r.skipped = r.skipped[:n]
	}
	return pt, nil
}

func (r *ReceiverKey) findSkipped(n uint32) int {
	for i := range r.skipped {
		if r.skipped[i].n == n {
			return i
		}
	}
	return -1
}

// openGroup decrypts a structurally checked, signature-checked envelope.
func openGroup(mk *[keyLen]byte, envelope []byte, n uint32) ([]byte, error) {
	aead, nonce := groupAEAD(mk)
	end := len(envelope) - sigLen
	pt, err := aead.Open(nil, nonce, envelope[offGroupCT:end], envelope[:offGroupCT])
	if err != nil {
		return nil, fmt.Errorf("%w: group message %d", ErrDecrypt, n)
	}
	return pt, nil
}

// MarshalBinary returns the receiver key's stored form, secrets included
// (docs/spec/senderkeys.md §9). [ParseReceiverKey] reads it back.
func (r *ReceiverKey) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, receiverFixedLen+len(r.skipped)*receiverSkipLen)
	b = append(b, receiverKeyMagic...)
	b = append(b, senderStateVersion)
	b = append(b, r.gid[:]...)
	b = binary.BigEndian.AppendUint64(b, r.epoch)
	b = append(b, r.device[:]...)
	b = append(b, r.signing[:]...)
	b = binary.BigEndian.AppendUint32(b, r.first)
	b = binary.BigEndian.AppendUint32(b, r.next)
	b = append(b, r.ck[:]...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.skipped)))
	for i := range r.skipped {
		b = binary.BigEndian.AppendUint32(b, r.skipped[i].n)
		b = append(b, r.skipped[i].mk[:]...)
	}
	return b, nil
}

// ParseReceiverKey reads a stored receiver key made by
// [ReceiverKey.MarshalBinary], checking its invariants (skipped
// iterations ascending, within the key's range, at most
// [MaxSenderKeySkip]). Errors wrap [ErrMalformed] or
// [ErrUnsupportedVersion].
func ParseReceiverKey(b []byte) (*ReceiverKey, error) {
	if len(b) < 5 || string(b[:4]) != receiverKeyMagic {
		return nil, fmt.Errorf("%w: not a stored receiver key", ErrMalformed)
	}
	if b[4] != senderStateVersion {
		return nil, fmt.Errorf("%w: stored receiver key version %d", ErrUnsupportedVersion, b[4])
	}
	if len(b) < receiverFixedLen {
		return nil, fmt.Errorf("%w: stored receiver key of %d bytes, at least %d needed", ErrMalformed, len(b), receiverFixedLen)
	}
	r := new(ReceiverKey)
	b = b[5:]
	b = b[copy(r.gid[:], b):]
	r.epoch, b = binary.BigEndian.Uint64(b), b[8:]
	b = b[copy(r.device[:], b):]
	b = b[copy(r.signing[:], b):]
	r.first, b = binary.BigEndian.Uint32(b), b[4:]
	r.next, b = binary.BigEndian.Uint32(b), b[4:]
	b = b[copy(r.ck[:], b):]
	count, b := int(binary.BigEndian.Uint16(b)), b[2:]
	switch {
	case r.device.IsZero():
		return nil, fmt.Errorf("%w: stored receiver key without a device", ErrMalformed)
	case smallOrder(&r.signing):
		return nil, fmt.Errorf("%w: stored receiver key with a small-order signing key", ErrMalformed)
	case r.next < r.first:
		return nil, fmt.Errorf("%w: stored receiver key at %d, before its first iteration %d", ErrMalformed, r.next, r.first)
	case count > MaxSenderKeySkip:
		return nil, fmt.Errorf("%w: %d skipped keys, at most %d", ErrMalformed, count, MaxSenderKeySkip)
	case len(b) != count*receiverSkipLen:
		return nil, fmt.Errorf("%w: stored receiver key: %d bytes of skipped keys, want %d", ErrMalformed, len(b), count*receiverSkipLen)
	}
	if count > 0 {
		r.skipped = make([]groupSkipped, count)
	}
	for i := range r.skipped {
		s := &r.skipped[i]
		s.n = binary.BigEndian.Uint32(b)
		copy(s.mk[:], b[4:])
		b = b[receiverSkipLen:]
		if s.n < r.first || s.n >= r.next || (i > 0 && s.n <= r.skipped[i-1].n) {
			return nil, fmt.Errorf("%w: stored receiver key: skipped key %d out of order or range", ErrMalformed, s.n)
		}
	}
	return r, nil
}
