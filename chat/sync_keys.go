package chat

// The sync-keys body (docs/spec/chat.md §8.6): the person's X25519
// encryption key generations, which installs holding the primary key give
// the person's other devices, so that a linked device opens what is
// sealed to its person (private files' wraps).

import (
	"crypto/ecdh"
	"encoding/binary"
	"errors"
	"fmt"
)

// KindSyncKeys carries the person's encryption key generations from an
// install that holds the primary key to another of the person's devices.
const KindSyncKeys Kind = "sync-keys"

// ErrKeyMismatch refuses a sync-keys message whose private key does not
// match the public key the person's verified chain published for that
// generation (or names a generation the chain skipped): nothing of it is
// stored.
var ErrKeyMismatch = errors.New("chat: a key your other device sent does not match your chain")

// Limits of a sync-keys body.
const (
	keyRecordLen   = 4 + 32 // generation, private key
	maxKeyRecords  = 256    // generations in one body (the newest, if a chain published more)
	x25519KeyBytes = 32
)

// keyRecord is one generation of the person's encryption key.
type keyRecord struct {
	Generation uint32
	Private    [x25519KeyBytes]byte
}

// publicKey returns the X25519 public key of the record's private key.
func (r keyRecord) publicKey() *ecdh.PublicKey {
	k, err := ecdh.X25519().NewPrivateKey(r.Private[:])
	if err != nil {
		panic("chat: x25519: " + err.Error()) // unreachable: any 32 bytes is an X25519 scalar
	}
	return k.PublicKey()
}

// marshalSyncKeys returns the body of a sync-keys message: for each
// record, in increasing generation order, the generation (u32) and the
// 32-byte private key; nothing else.
func marshalSyncKeys(recs []keyRecord) []byte {
	b := make([]byte, 0, len(recs)*keyRecordLen)
	for _, r := range recs {
		b = binary.BigEndian.AppendUint32(b, r.Generation)
		b = append(b, r.Private[:]...)
	}
	return b
}

// parseSyncKeys parses a sync-keys body: 1 to maxKeyRecords records,
// generations strictly increasing.
func parseSyncKeys(body []byte) ([]keyRecord, error) {
	if len(body) == 0 || len(body)%keyRecordLen != 0 || len(body)/keyRecordLen > maxKeyRecords {
		return nil, fmt.Errorf("%w: a sync-keys body of %d bytes is not 1 to %d records of %d bytes", ErrMalformed, len(body), maxKeyRecords, keyRecordLen)
	}
	out := make([]keyRecord, 0, len(body)/keyRecordLen)
	for r := body; len(r) > 0; r = r[keyRecordLen:] {
		var k keyRecord
		k.Generation = binary.BigEndian.Uint32(r)
		copy(k.Private[:], r[4:keyRecordLen])
		if n := len(out); n > 0 && k.Generation <= out[n-1].Generation {
			return nil, fmt.Errorf("%w: a sync-keys body repeats or reorders generation %d", ErrMalformed, k.Generation)
		}
		out = append(out, k)
	}
	return out, nil
}

// Keyring is a set of the person's X25519 encryption keys by generation,
// as a linked device received them (docs/spec/chat.md §8.6). It
// implements the viewer keys of files/format ([format.Keys]).
type Keyring map[uint32]*ecdh.PrivateKey

// EncryptionKey returns the private key of generation gen, or nil if the
// keyring lacks it.
func (k Keyring) EncryptionKey(gen uint32) *ecdh.PrivateKey { return k[gen] }
