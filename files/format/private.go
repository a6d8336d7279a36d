package format

import (
	"crypto/ecdh"
	"crypto/hpke"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/kez"
)

// The HPKE suite of a wrap: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
// ChaCha20-Poly1305, base mode, single-shot with an empty AAD. The info is
// wrapInfo || 0x00 || CID bytes || uint64be(blob size), binding the wrap to
// its entry, so any RFC 9180 single-shot API can open it.
const (
	wrapInfo    = "kez/v1 private file key wrap"
	wrapVersion = 1
	wrapPad     = 64 // the wrap plaintext is zero-padded to a multiple of this
	hpkeEncLen  = 32
	hpkeTagLen  = 16
	// smallest payload: version, key, size, mtime, name length, 1-byte name,
	// media type length
	wrapMinPlain = 1 + 32 + 8 + 8 + 1 + 1 + 1
	wrapMaxPlain = wrapMinPlain - 1 + MaxNameLen + MaxMediaTypeLen
)

var (
	wrapKDF  = hpke.HKDFSHA256()
	wrapAEAD = hpke.ChaCha20Poly1305()
)

func paddedLen(n int) int { return (n + wrapPad - 1) / wrapPad * wrapPad }

// validSealedLen reports whether n is the length of a sealed wrap.
func validSealedLen(n int) bool {
	p := n - hpkeEncLen - hpkeTagLen
	return p >= paddedLen(wrapMinPlain) && p <= paddedLen(wrapMaxPlain) && p%wrapPad == 0
}

// Recipient is someone a private entry is shared with: their identity key
// (for the serving side's access policy) and their X25519 encryption key of
// the given generation, as their sigchain publishes it.
type Recipient struct {
	Key        kez.PublicKey
	X25519     *ecdh.PublicKey
	Generation uint32
}

// RecipientOf returns id as a recipient, with its encryption key of the
// given generation; for sharing with oneself (so one's other devices see
// the entry) and for tests.
func RecipientOf(id *kez.Identity, generation uint32) Recipient {
	return Recipient{Key: id.PublicKey(), X25519: id.EncryptionKey(generation).PublicKey(), Generation: generation}
}

func wrapInfoFor(c cid.Cid, blobSize int64) []byte {
	b := append([]byte(wrapInfo), 0)
	b = append(b, c.Bytes()...)
	return binary.BigEndian.AppendUint64(b, uint64(blobSize))
}

// AddPrivate adds a private entry: e describes the plaintext file (Name,
// Size, MediaType, ModTime) and its encryption (Key, and CID of the
// encrypted blob made with [Encrypt] or [EncryptFile]); the key, name,
// media type, size and time are sealed to each recipient, and nothing else
// about them is recorded. Include yourself among the recipients to see the
// entry from another device.
func (m *Manifest) AddPrivate(e Entry, recipients []Recipient) error {
	if err := checkEntryFields(&e); err != nil {
		return err
	}
	if e.Key == (FileKey{}) {
		return fmt.Errorf("%w: a private entry needs the file key its blob was encrypted with", ErrManifest)
	}
	if len(recipients) == 0 || len(recipients) > MaxRecipients {
		return fmt.Errorf("%w: a private entry has 1 to %d recipients, got %d", ErrManifest, MaxRecipients, len(recipients))
	}
	if err := m.checkRoom(len(recipients)); err != nil {
		return err
	}
	blobSize := EncryptedSize(e.Size)
	if err := checkSize(blobSize); err != nil {
		return err
	}
	pt := make([]byte, 0, paddedLen(wrapMaxPlain))
	pt = append(pt, wrapVersion)
	pt = append(pt, e.Key[:]...)
	pt = binary.BigEndian.AppendUint64(pt, uint64(e.Size))
	pt = binary.BigEndian.AppendUint64(pt, uint64(e.ModTime.Unix()))
	pt = append(pt, byte(len(e.Name)))
	pt = append(pt, e.Name...)
	pt = append(pt, byte(len(e.MediaType)))
	pt = append(pt, e.MediaType...)
	pt = append(pt, make([]byte, paddedLen(len(pt))-len(pt))...)
	info := wrapInfoFor(e.CID, blobSize)
	se := SealedEntry{CID: e.CID, BlobSize: blobSize, Device: e.Device}
	for _, r := range recipients {
		if r.X25519 == nil || r.X25519.Curve() != ecdh.X25519() {
			return fmt.Errorf("%w: recipient %s has no X25519 key", ErrManifest, r.Key)
		}
		if r.Generation >= maxGeneration {
			return fmt.Errorf("%w: recipient %s: key generation %d is too high", ErrManifest, r.Key, r.Generation)
		}
		pk, err := hpke.NewDHKEMPublicKey(r.X25519)
		if err != nil {
			return fmt.Errorf("files: recipient %s: %w", r.Key, err)
		}
		sealed, err := hpke.Seal(pk, wrapKDF, wrapAEAD, info, pt)
		if err != nil {
			return fmt.Errorf("files: sealing to %s: %w", r.Key, err)
		}
		se.Wraps = append(se.Wraps, Wrap{Generation: r.Generation, Sealed: sealed})
	}
	m.Sealed = append(m.Sealed, se)
	return nil
}

var errWrap = errors.New("files: malformed wrap")

// openWrap decodes a wrap's plaintext into the entry it describes.
func openWrap(pt []byte, se *SealedEntry) (Entry, error) {
	r := &reader{b: pt}
	if r.u8() != wrapVersion {
		return Entry{}, errWrap
	}
	e := Entry{CID: se.CID, BlobSize: se.BlobSize, Private: true, Device: se.Device}
	copy(e.Key[:], r.take(32))
	e.Size = int64(r.u64())
	e.ModTime = time.Unix(int64(r.u64()), 0).UTC()
	e.Name = string(r.take(r.u8()))
	e.MediaType = string(r.take(r.u8()))
	if r.err != nil || len(pt) != paddedLen(len(pt)-len(r.b)) {
		return Entry{}, errWrap
	}
	for _, c := range r.b {
		if c != 0 {
			return Entry{}, errWrap
		}
	}
	if checkEntryFields(&e) != nil || EncryptedSize(e.Size) != se.BlobSize {
		return Entry{}, errWrap
	}
	return e, nil
}

// maxGeneration bounds the key generation a viewer derives for a wrap.
const maxGeneration = 1 << 16

// Keys gives a viewer's X25519 private encryption key of a generation,
// or nil when the viewer does not hold that generation. A
// [*kez.Identity] derives every generation from the words; a linked
// device holds those its person's other devices sent it (chat.Keyring,
// chat.Client).
type Keys interface {
	EncryptionKey(generation uint32) *ecdh.PrivateKey
}

// Visible returns the entries of m that viewer may see: every public entry,
// then each private entry sealed to one of viewer's encryption keys, with
// its real name and its file key. A nil viewer sees the public entries.
// Wraps that do not open for viewer are skipped silently (they are someone
// else's). The cost is one X25519 operation per wrap, bounded by [MaxWraps].
func Visible(m *Manifest, viewer *kez.Identity) []Entry {
	if viewer == nil {
		return VisibleTo(m, nil)
	}
	return VisibleTo(m, viewer)
}

// VisibleTo is [Visible] for a viewer given by its keys: a private entry
// shows when one of its wraps opens with the key of that wrap's
// generation. Nil keys see the public entries.
func VisibleTo(m *Manifest, viewer Keys) []Entry {
	out := append([]Entry(nil), m.Public...)
	if viewer == nil {
		return out
	}
	keys := map[uint32]hpke.PrivateKey{}
	for i := range m.Sealed {
		se := &m.Sealed[i]
		info := wrapInfoFor(se.CID, se.BlobSize)
		for _, w := range se.Wraps {
			if w.Generation >= maxGeneration || len(w.Sealed) < hpkeEncLen {
				continue
			}
			k, ok := keys[w.Generation]
			if !ok {
				if x := viewer.EncryptionKey(w.Generation); x != nil {
					k, _ = hpke.NewDHKEMPrivateKey(x)
				}
				keys[w.Generation] = k // nil: not held, not asked again
			}
			if k == nil {
				continue
			}
			pt, err := hpke.Open(k, wrapKDF, wrapAEAD, info, w.Sealed)
			if err != nil {
				continue
			}
			if e, err := openWrap(pt, se); err == nil {
				out = append(out, e)
				break
			}
		}
	}
	return out
}
