package format

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/kez"
)

// A share to a group (docs/spec/manifest.md §7): the manifest entry names
// the group and has no wraps; the file key, with the file's name, size,
// media type and time, travels to the group's members inside the group,
// as a [GroupFile] offer (a chat message of kind group-file sealed with
// the sender key of the group's epoch).

// ErrGroupFile reports bytes that are not a valid group file offer, or a
// GroupFile that cannot be encoded.
var ErrGroupFile = errors.New("files: invalid group file offer")

// groupFileVersion is the first byte of a group file offer.
const groupFileVersion = 1

// Bounds of a group file offer: version, group, owner, CID length and the
// shortest CID, key, size, mtime, name length and a 1-byte name, media
// type length; the longest adds the longest CID, name and media type.
const (
	minCIDLen       = 1
	maxOfferCIDLen  = 64
	minGroupFileLen = 1 + 32 + 32 + 1 + minCIDLen + 32 + 8 + 8 + 1 + 1 + 1
	// MaxGroupFileLen bounds the encoded offer.
	MaxGroupFileLen = minGroupFileLen - minCIDLen - 1 + maxOfferCIDLen + MaxNameLen + MaxMediaTypeLen
)

// GroupFile is a file shared with a group, as the offer its sharer sends
// to the group's members carries it: enough to find the owner's manifest
// entry (Owner, CID, Group) and to decrypt the blob (Key), with the
// file's name, size, media type and time, which the entry does not hold.
type GroupFile struct {
	Group     [32]byte      // the group's ID; the manifest entry names it
	Owner     kez.PublicKey // the sharer's (person) key: whose manifest lists CID
	CID       cid.Cid       // the encrypted blob
	Key       FileKey       // decrypts it
	Name      string        // the file name (the rules of CheckName)
	Size      int64         // the plaintext size
	MediaType string        // may be empty
	ModTime   time.Time     // whole seconds
}

// check enforces the offer's rules.
func (f *GroupFile) check() error {
	switch {
	case f.Group == [32]byte{}:
		return fmt.Errorf("%w: the group ID is zero", ErrGroupFile)
	case f.Owner.IsZero():
		return fmt.Errorf("%w: no owner", ErrGroupFile)
	case f.Key == FileKey{}:
		return fmt.Errorf("%w: the file key is zero", ErrGroupFile)
	}
	e := f.Entry()
	if err := checkEntryFields(&e); err != nil {
		return fmt.Errorf("%w: %w", ErrGroupFile, err)
	}
	if n := len(f.CID.Bytes()); n > maxOfferCIDLen {
		return fmt.Errorf("%w: a CID of %d bytes", ErrGroupFile, n)
	}
	return nil
}

// Entry is the private entry the offer describes, as a fetcher uses it:
// Private, with the key, and the blob's size ([EncryptedSize]); the
// serving device is the manifest entry's, which the offer does not say.
func (f *GroupFile) Entry() Entry {
	return Entry{
		Name: f.Name, Size: f.Size, CID: f.CID, MediaType: f.MediaType, ModTime: time.Unix(f.ModTime.Unix(), 0).UTC(),
		Private: true, Key: f.Key, BlobSize: EncryptedSize(f.Size),
	}
}

// MarshalBinary returns the offer's wire form (docs/spec/manifest.md §7):
//
//	version (1) = 0x01 | group (32) | owner (32) | cid_len (1) | cid
//	| file key (32) | size (8) | mtime (8) | name_len (1) | name
//	| media_len (1) | media type
func (f *GroupFile) MarshalBinary() ([]byte, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	cb := f.CID.Bytes()
	b := make([]byte, 0, minGroupFileLen+len(cb)+len(f.Name)+len(f.MediaType))
	b = append(b, groupFileVersion)
	b = append(b, f.Group[:]...)
	b = append(b, f.Owner[:]...)
	b = append(b, byte(len(cb)))
	b = append(b, cb...)
	b = append(b, f.Key[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(f.Size))
	b = binary.BigEndian.AppendUint64(b, uint64(f.ModTime.Unix()))
	b = append(b, byte(len(f.Name)))
	b = append(b, f.Name...)
	b = append(b, byte(len(f.MediaType)))
	return append(b, f.MediaType...), nil
}

// ParseGroupFile parses an offer from untrusted bytes: exactly the layout
// [GroupFile.MarshalBinary] writes, every field within its rules (a KEZ
// blob CID in its canonical binary form, a file name and media type as
// in a manifest, a size a blob may have), nothing after it. Errors wrap
// [ErrGroupFile].
func ParseGroupFile(b []byte) (*GroupFile, error) {
	if len(b) < minGroupFileLen || len(b) > MaxGroupFileLen {
		return nil, fmt.Errorf("%w: %d bytes, not %d to %d", ErrGroupFile, len(b), minGroupFileLen, MaxGroupFileLen)
	}
	r := &reader{b: b}
	if v := r.u8(); v != groupFileVersion {
		return nil, fmt.Errorf("%w: unknown version %d", ErrGroupFile, v)
	}
	f := &GroupFile{}
	copy(f.Group[:], r.take(32))
	copy(f.Owner[:], r.take(32))
	cl := r.u8()
	if cl < minCIDLen || cl > maxOfferCIDLen {
		return nil, fmt.Errorf("%w: a CID of %d bytes", ErrGroupFile, cl)
	}
	cb := r.take(cl)
	copy(f.Key[:], r.take(32))
	size := r.u64()
	mtime := int64(r.u64())
	f.Name = string(r.take(r.u8()))
	f.MediaType = string(r.take(r.u8()))
	if r.err != nil {
		return nil, fmt.Errorf("%w: truncated", ErrGroupFile)
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the media type", ErrGroupFile, len(r.b))
	}
	c, err := CastCID(cb)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrGroupFile, err)
	}
	f.CID = c
	if size > MaxBlobSize {
		return nil, fmt.Errorf("%w: size %d is outside 0..%d", ErrGroupFile, size, int64(MaxBlobSize))
	}
	f.Size = int64(size)
	if mtime > maxMTime || mtime < -maxMTime {
		return nil, fmt.Errorf("%w: modification time %d is out of range", ErrGroupFile, mtime)
	}
	f.ModTime = time.Unix(mtime, 0).UTC()
	if err := f.check(); err != nil {
		return nil, err
	}
	return f, nil
}

// AddGroup adds the entry of a private file shared with the group whose
// ID is group (docs/spec/manifest.md §7): its blob (e.CID, of a file of
// e.Size bytes encrypted with [Encrypt] or [EncryptFile]) and its serving
// device, and no wraps: the key, name, media type and time go to the
// group's members in a [GroupFile] offer, not into the manifest. A
// manifest with a group entry is written as version 2.
func (m *Manifest) AddGroup(e Entry, group [32]byte) error {
	if err := checkEntryFields(&e); err != nil {
		return err
	}
	if group == ([32]byte{}) {
		return fmt.Errorf("%w: an entry shared with a group needs the group's ID", ErrManifest)
	}
	if err := m.checkRoom(0); err != nil {
		return err
	}
	blobSize := EncryptedSize(e.Size)
	if err := checkSize(blobSize); err != nil {
		return err
	}
	m.Sealed = append(m.Sealed, SealedEntry{CID: e.CID, BlobSize: blobSize, Device: e.Device, Group: group})
	return nil
}

// GroupEntry returns the entry of m whose blob is c if it is shared with a
// group (see [Manifest.AddGroup]).
func (m *Manifest) GroupEntry(c cid.Cid) (SealedEntry, bool) {
	for _, se := range m.Sealed {
		if se.Group != ([32]byte{}) && se.CID.Equals(c) {
			return se, true
		}
	}
	return SealedEntry{}, false
}
