package files

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ipfs/go-cid"
)

// Manifest limits. A manifest travels in a sigchain link, so it is small;
// every bound is checked by both the encoder and the decoder.
const (
	MaxManifestSize = 256 << 10 // encoded bytes
	MaxEntries      = 1000      // public plus private entries
	MaxRecipients   = 32        // wraps of one private entry
	MaxWraps        = 512       // wraps in one manifest (bounds a viewer's work)
	MaxNameLen      = 255       // bytes of UTF-8
	MaxMediaTypeLen = 127       // bytes of printable ASCII
)

const (
	manifestMagic   = "KEZM"
	manifestVersion = 1
	kindPublic      = 1
	kindPrivate     = 2
)

// ErrManifest reports bytes that are not a valid manifest, or an entry
// that cannot go into one.
var ErrManifest = errors.New("files: invalid manifest")

// Entry is one shared file as a viewer sees it.
type Entry struct {
	Name      string    // file name: no path separators, see docs/spec/manifest.md
	Size      int64     // size of the file (the plaintext, for a private entry)
	CID       cid.Cid   // the blob to fetch (the encrypted file, for a private entry)
	MediaType string    // e.g. "application/pdf"; may be empty
	ModTime   time.Time // modification time, whole seconds

	// Private is set on a private entry the viewer is a recipient of; Key
	// decrypts the blob, which is BlobSize = EncryptedSize(Size) bytes.
	Private  bool
	Key      FileKey
	BlobSize int64
}

// SealedEntry is a private entry as everyone sees it: the blob's CID and
// size, and the file key, name, media type, size and time sealed to each
// recipient.
type SealedEntry struct {
	CID      cid.Cid
	BlobSize int64
	Wraps    []Wrap
}

// Wrap is the entry's secrets sealed with HPKE to one recipient's X25519
// key of the given generation. Who the recipient is, is not recorded.
type Wrap struct {
	Generation uint32
	Sealed     []byte // HPKE encapsulated key (32 bytes) || ciphertext
}

// Manifest is the body of a set_shared_files sigchain link: the files a
// user shares. Build one with [Manifest.AddPublic] and
// [Manifest.AddPrivate], send [Manifest.Encode], read with
// [DecodeManifest] and [Visible]. A Manifest is not safe for concurrent
// modification.
type Manifest struct {
	Public []Entry
	Sealed []SealedEntry
}

// checkName enforces the file-name rules of docs/spec/manifest.md: 1 to
// 255 bytes of UTF-8, no control characters, no '/' or '\', not "." or "..".
func checkName(s string) error {
	if s == "" || len(s) > MaxNameLen {
		return fmt.Errorf("%w: a file name must be 1 to %d bytes, got %d", ErrManifest, MaxNameLen, len(s))
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: the file name %q is not UTF-8", ErrManifest, s)
	}
	if s == "." || s == ".." || strings.ContainsAny(s, `/\`) {
		return fmt.Errorf("%w: the file name %q is a path, not a name", ErrManifest, s)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return fmt.Errorf("%w: the file name %q has a control character", ErrManifest, s)
		}
	}
	return nil
}

func checkMediaType(s string) error {
	if len(s) > MaxMediaTypeLen {
		return fmt.Errorf("%w: a media type is at most %d bytes, got %d", ErrManifest, MaxMediaTypeLen, len(s))
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return fmt.Errorf("%w: the media type %q is not printable ASCII", ErrManifest, s)
		}
	}
	return nil
}

func checkSize(n int64) error {
	if n < 0 || n > MaxBlobSize {
		return fmt.Errorf("%w: size %d is outside 0..%d", ErrManifest, n, int64(MaxBlobSize))
	}
	return nil
}

func checkEntryFields(e *Entry) error {
	if err := checkName(e.Name); err != nil {
		return err
	}
	if err := checkMediaType(e.MediaType); err != nil {
		return err
	}
	if err := checkSize(e.Size); err != nil {
		return err
	}
	if err := CheckCID(e.CID); err != nil {
		return fmt.Errorf("%w: %v", ErrManifest, err)
	}
	return nil
}

func (m *Manifest) checkRoom(wraps int) error {
	if len(m.Public)+len(m.Sealed) >= MaxEntries {
		return fmt.Errorf("%w: a manifest holds at most %d entries", ErrManifest, MaxEntries)
	}
	total := wraps
	for _, s := range m.Sealed {
		total += len(s.Wraps)
	}
	if total > MaxWraps {
		return fmt.Errorf("%w: a manifest holds at most %d recipient wraps in all", ErrManifest, MaxWraps)
	}
	return nil
}

// AddPublic adds a public entry. Its name must be unique among the public
// entries; the time is truncated to whole seconds.
func (m *Manifest) AddPublic(e Entry) error {
	if err := checkEntryFields(&e); err != nil {
		return err
	}
	if err := m.checkRoom(0); err != nil {
		return err
	}
	for _, p := range m.Public {
		if p.Name == e.Name {
			return fmt.Errorf("%w: two public entries are named %q", ErrManifest, e.Name)
		}
	}
	m.Public = append(m.Public, Entry{
		Name: e.Name, Size: e.Size, CID: e.CID, MediaType: e.MediaType,
		ModTime: time.Unix(e.ModTime.Unix(), 0).UTC(), BlobSize: e.Size,
	})
	return nil
}

// Remove drops every entry, public or private, whose blob is c, and
// reports whether there was one.
func (m *Manifest) Remove(c cid.Cid) bool {
	found := false
	pub := m.Public[:0]
	for _, e := range m.Public {
		if e.CID.Equals(c) {
			found = true
			continue
		}
		pub = append(pub, e)
	}
	m.Public = pub
	sealed := m.Sealed[:0]
	for _, e := range m.Sealed {
		if e.CID.Equals(c) {
			found = true
			continue
		}
		sealed = append(sealed, e)
	}
	m.Sealed = sealed
	return found
}

// Encode returns the manifest's wire form (docs/spec/manifest.md). It
// fails if the manifest breaks a rule or a limit.
func (m *Manifest) Encode() ([]byte, error) {
	if len(m.Public)+len(m.Sealed) > MaxEntries {
		return nil, fmt.Errorf("%w: %d entries, at most %d", ErrManifest, len(m.Public)+len(m.Sealed), MaxEntries)
	}
	b := append([]byte(manifestMagic), manifestVersion)
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.Public)))
	names := map[string]bool{}
	for i := range m.Public {
		e := &m.Public[i]
		if err := checkEntryFields(e); err != nil {
			return nil, err
		}
		if names[e.Name] {
			return nil, fmt.Errorf("%w: two public entries are named %q", ErrManifest, e.Name)
		}
		names[e.Name] = true
		b = appendCID(b, e.CID)
		b = binary.BigEndian.AppendUint64(b, uint64(e.Size))
		b = binary.BigEndian.AppendUint64(b, uint64(e.ModTime.Unix()))
		b = append(b, byte(len(e.Name)))
		b = append(b, e.Name...)
		b = append(b, byte(len(e.MediaType)))
		b = append(b, e.MediaType...)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.Sealed)))
	wraps := 0
	for i := range m.Sealed {
		e := &m.Sealed[i]
		if err := CheckCID(e.CID); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrManifest, err)
		}
		if _, err := PlaintextSize(e.BlobSize); err != nil {
			return nil, fmt.Errorf("%w: blob size %d is not an encrypted file's", ErrManifest, e.BlobSize)
		}
		if len(e.Wraps) == 0 || len(e.Wraps) > MaxRecipients {
			return nil, fmt.Errorf("%w: a private entry has 1 to %d recipients, got %d", ErrManifest, MaxRecipients, len(e.Wraps))
		}
		if wraps += len(e.Wraps); wraps > MaxWraps {
			return nil, fmt.Errorf("%w: a manifest holds at most %d recipient wraps in all", ErrManifest, MaxWraps)
		}
		b = appendCID(b, e.CID)
		b = binary.BigEndian.AppendUint64(b, uint64(e.BlobSize))
		b = append(b, byte(len(e.Wraps)))
		for _, w := range e.Wraps {
			if !validSealedLen(len(w.Sealed)) {
				return nil, fmt.Errorf("%w: a wrap of %d bytes", ErrManifest, len(w.Sealed))
			}
			b = binary.BigEndian.AppendUint32(b, w.Generation)
			b = binary.BigEndian.AppendUint16(b, uint16(len(w.Sealed)))
			b = append(b, w.Sealed...)
		}
	}
	if len(b) > MaxManifestSize {
		return nil, fmt.Errorf("%w: %d bytes encoded, at most %d", ErrManifest, len(b), MaxManifestSize)
	}
	return b, nil
}

func appendCID(b []byte, c cid.Cid) []byte {
	cb := c.Bytes()
	b = append(b, byte(len(cb)))
	return append(b, cb...)
}

// reader is a bounds-checked cursor over untrusted bytes.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n > len(r.b) {
		r.err = fmt.Errorf("%w: truncated", ErrManifest)
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) u8() int {
	if b := r.take(1); b != nil {
		return int(b[0])
	}
	return 0
}

func (r *reader) u16() int {
	if b := r.take(2); b != nil {
		return int(binary.BigEndian.Uint16(b))
	}
	return 0
}

func (r *reader) u32() uint32 {
	if b := r.take(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if b := r.take(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

func (r *reader) cid() cid.Cid {
	n := r.u8()
	b := r.take(n)
	if r.err != nil {
		return cid.Undef
	}
	c, err := castCID(b)
	if err != nil {
		r.err = fmt.Errorf("%w: %v", ErrManifest, err)
	}
	return c
}

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

// DecodeManifest parses a manifest from untrusted bytes. It is strict: the
// input must be exactly the encoding [Manifest.Encode] would produce, within
// every limit. Errors wrap [ErrManifest].
func DecodeManifest(b []byte) (*Manifest, error) {
	if len(b) > MaxManifestSize {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrManifest, len(b), MaxManifestSize)
	}
	r := &reader{b: b}
	if string(r.take(len(manifestMagic))) != manifestMagic {
		return nil, fmt.Errorf("%w: it does not start with %q", ErrManifest, manifestMagic)
	}
	if v := r.u8(); v != manifestVersion {
		return nil, fmt.Errorf("%w: unknown version %d", ErrManifest, v)
	}
	m := &Manifest{}
	npub := r.u16()
	if npub > MaxEntries {
		return nil, fmt.Errorf("%w: %d entries, at most %d", ErrManifest, npub, MaxEntries)
	}
	names := map[string]bool{}
	for i := 0; i < npub && r.err == nil; i++ {
		var e Entry
		e.CID = r.cid()
		e.Size = int64(r.u64())
		e.ModTime = time.Unix(int64(r.u64()), 0).UTC()
		e.Name = string(r.take(r.u8()))
		e.MediaType = string(r.take(r.u8()))
		e.BlobSize = e.Size
		if r.err != nil {
			break
		}
		if err := checkEntryFields(&e); err != nil {
			r.fail(err)
		} else if names[e.Name] {
			r.fail(fmt.Errorf("%w: two public entries are named %q", ErrManifest, e.Name))
		}
		names[e.Name] = true
		m.Public = append(m.Public, e)
	}
	npriv := r.u16()
	if r.err == nil && npub+npriv > MaxEntries {
		r.fail(fmt.Errorf("%w: %d entries, at most %d", ErrManifest, npub+npriv, MaxEntries))
	}
	wraps := 0
	for i := 0; i < npriv && r.err == nil; i++ {
		var e SealedEntry
		e.CID = r.cid()
		e.BlobSize = int64(r.u64())
		nw := r.u8()
		if r.err != nil {
			break
		}
		if _, err := PlaintextSize(e.BlobSize); err != nil {
			r.fail(fmt.Errorf("%w: blob size %d is not an encrypted file's", ErrManifest, e.BlobSize))
		}
		if nw == 0 || nw > MaxRecipients {
			r.fail(fmt.Errorf("%w: a private entry has 1 to %d recipients, got %d", ErrManifest, MaxRecipients, nw))
		}
		if wraps += nw; wraps > MaxWraps {
			r.fail(fmt.Errorf("%w: more than %d recipient wraps", ErrManifest, MaxWraps))
		}
		for j := 0; j < nw && r.err == nil; j++ {
			var w Wrap
			w.Generation = r.u32()
			n := r.u16()
			if r.err == nil && !validSealedLen(n) {
				r.fail(fmt.Errorf("%w: a wrap of %d bytes", ErrManifest, n))
			}
			w.Sealed = append([]byte(nil), r.take(n)...)
			e.Wraps = append(e.Wraps, w)
		}
		m.Sealed = append(m.Sealed, e)
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail(fmt.Errorf("%w: %d bytes after the last entry", ErrManifest, len(r.b)))
	}
	if r.err != nil {
		return nil, r.err
	}
	return m, nil
}
