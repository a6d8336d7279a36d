package format

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/kez"
)

// Manifest limits. A manifest travels in a sigchain link, so it is small
// (the sigchain's set_shared_files body limit); every bound is checked by
// both the encoder and the decoder.
const (
	MaxManifestSize = 60 << 10 // encoded bytes
	MaxEntries      = 400      // public plus private entries
	MaxRecipients   = 32       // wraps of one private entry
	MaxWraps        = 256      // wraps in one manifest (bounds a viewer's work)
	MaxNameLen      = 255      // bytes of UTF-8
	MaxMediaTypeLen = 127      // bytes of printable ASCII

	maxMTime = 1<<53 - 1 // JSON integers stay exact
)

// Manifest versions: 1 without group entries, 2 with at least one
// (docs/spec/manifest.md §7). A manifest is written with the lowest
// version that holds it, so one without group entries is byte for byte
// what readers before groups wrote, and those readers refuse one with
// them whole (an unknown version) rather than misread it.
const (
	manifestVersion       = 1
	manifestVersionGroups = 2
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

	// Device is the key of the device whose node serves the blob; zero
	// means the owner's own (primary) key. A fetcher must check that it
	// is a current device of the owner's chain (docs/spec/manifest.md §6).
	Device kez.PublicKey
}

// SealedEntry is a private entry as everyone sees it: the blob's CID and
// size, and the file key, name, media type, size and time sealed to each
// recipient; or, for a share to a group, no wraps and the group's ID (the
// key travels in the group, see [GroupFile]).
type SealedEntry struct {
	CID      cid.Cid
	BlobSize int64
	Wraps    []Wrap
	Device   kez.PublicKey // as in Entry: zero for the owner's own key
	// Group is the ID of the group a share to a group went to (its
	// entry has no wraps); zero for an entry with wraps.
	Group [32]byte
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

// CheckName enforces the file-name rules of docs/spec/manifest.md: 1 to
// 255 bytes of UTF-8, no control characters, no '/' or '\', not "." or "..".
func CheckName(s string) error {
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

// CheckMediaType enforces the media-type rule of docs/spec/manifest.md:
// at most MaxMediaTypeLen bytes of printable ASCII.
func CheckMediaType(s string) error {
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
	if err := CheckName(e.Name); err != nil {
		return err
	}
	if t := e.ModTime.Unix(); t > maxMTime || t < -maxMTime {
		return fmt.Errorf("%w: modification time %d is out of range", ErrManifest, t)
	}
	if err := CheckMediaType(e.MediaType); err != nil {
		return err
	}
	if err := checkSize(e.Size); err != nil {
		return err
	}
	if err := CheckCID(e.CID); err != nil {
		return fmt.Errorf("%w: %w", ErrManifest, err)
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
		ModTime: time.Unix(e.ModTime.Unix(), 0).UTC(), BlobSize: e.Size, Device: e.Device,
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

// The wire form: one canonical JSON object (docs/spec/manifest.md). Field
// order in these structs is the sorted key order, so encoding/json writes
// the canonical form.
type wireManifest struct {
	Private []wirePrivate `json:"private"`
	Public  []wirePublic  `json:"public"`
	Version int           `json:"version"`
}

type wirePublic struct {
	CID       string `json:"cid"`
	Device    string `json:"device,omitempty"`
	MediaType string `json:"media_type"`
	MTime     int64  `json:"mtime"`
	Name      string `json:"name"`
	Size      int64  `json:"size"`
}

type wirePrivate struct {
	BlobSize int64      `json:"blob_size"`
	CID      string     `json:"cid"`
	Device   string     `json:"device,omitempty"`
	Group    string     `json:"group,omitempty"`
	Wraps    []wireWrap `json:"wraps"`
}

type wireWrap struct {
	Generation uint32 `json:"generation"`
	Sealed     string `json:"sealed"`
}

var b64 = base64.RawURLEncoding.Strict()

// Encode returns the manifest's wire form, a canonical JSON object
// (docs/spec/manifest.md), ready to be the body of a set_shared_files
// sigchain link. It fails if the manifest breaks a rule or a limit.
func (m *Manifest) Encode() ([]byte, error) {
	if len(m.Public)+len(m.Sealed) > MaxEntries {
		return nil, fmt.Errorf("%w: %d entries, at most %d", ErrManifest, len(m.Public)+len(m.Sealed), MaxEntries)
	}
	w := wireManifest{Private: []wirePrivate{}, Public: []wirePublic{}, Version: m.version()}
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
		w.Public = append(w.Public, wirePublic{CID: e.CID.String(), Device: wireDevice(e.Device), MediaType: e.MediaType,
			MTime: e.ModTime.Unix(), Name: e.Name, Size: e.Size})
	}
	wraps := 0
	for i := range m.Sealed {
		e := &m.Sealed[i]
		if err := CheckCID(e.CID); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrManifest, err)
		}
		if _, err := PlaintextSize(e.BlobSize); err != nil {
			return nil, fmt.Errorf("%w: blob size %d is not an encrypted file's", ErrManifest, e.BlobSize)
		}
		if e.Group != ([32]byte{}) && len(e.Wraps) > 0 {
			return nil, fmt.Errorf("%w: an entry shared with a group has no wraps, got %d", ErrManifest, len(e.Wraps))
		}
		if e.Group == ([32]byte{}) && (len(e.Wraps) == 0 || len(e.Wraps) > MaxRecipients) {
			return nil, fmt.Errorf("%w: a private entry has 1 to %d recipients, got %d", ErrManifest, MaxRecipients, len(e.Wraps))
		}
		if wraps += len(e.Wraps); wraps > MaxWraps {
			return nil, fmt.Errorf("%w: a manifest holds at most %d recipient wraps in all", ErrManifest, MaxWraps)
		}
		wp := wirePrivate{BlobSize: e.BlobSize, CID: e.CID.String(), Device: wireDevice(e.Device), Wraps: []wireWrap{}}
		if e.Group != ([32]byte{}) {
			wp.Group = hex.EncodeToString(e.Group[:])
		}
		for _, wr := range e.Wraps {
			if !validSealedLen(len(wr.Sealed)) {
				return nil, fmt.Errorf("%w: a wrap of %d bytes", ErrManifest, len(wr.Sealed))
			}
			if wr.Generation >= maxGeneration {
				return nil, fmt.Errorf("%w: key generation %d is too high", ErrManifest, wr.Generation)
			}
			wp.Wraps = append(wp.Wraps, wireWrap{Generation: wr.Generation, Sealed: b64.EncodeToString(wr.Sealed)})
		}
		w.Private = append(w.Private, wp)
	}
	b, err := json.Marshal(w)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrManifest, err)
	}
	if len(b) > MaxManifestSize {
		return nil, fmt.Errorf("%w: %d bytes encoded, at most %d", ErrManifest, len(b), MaxManifestSize)
	}
	return b, nil
}

// DecodeManifest parses a manifest from untrusted bytes. It is strict: the
// input must be exactly the canonical JSON [Manifest.Encode] would produce
// (no other key order, spacing, escapes, number forms, unknown or repeated
// keys), within every limit. Errors wrap [ErrManifest].
func DecodeManifest(b []byte) (*Manifest, error) {
	if len(b) > MaxManifestSize {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrManifest, len(b), MaxManifestSize)
	}
	var w wireManifest
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&w); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrManifest, err)
	}
	if w.Version != manifestVersion && w.Version != manifestVersionGroups {
		return nil, fmt.Errorf("%w: unknown version %d", ErrManifest, w.Version)
	}
	if n := len(w.Public) + len(w.Private); n > MaxEntries {
		return nil, fmt.Errorf("%w: %d entries, at most %d", ErrManifest, n, MaxEntries)
	}
	m := &Manifest{}
	for _, wp := range w.Public {
		c, err := parseWireCID(wp.CID)
		if err != nil {
			return nil, err
		}
		dev, err := parseWireDevice(wp.Device)
		if err != nil {
			return nil, err
		}
		m.Public = append(m.Public, Entry{Name: wp.Name, Size: wp.Size, CID: c, MediaType: wp.MediaType,
			ModTime: time.Unix(wp.MTime, 0).UTC(), BlobSize: wp.Size, Device: dev})
	}
	for _, wp := range w.Private {
		c, err := parseWireCID(wp.CID)
		if err != nil {
			return nil, err
		}
		dev, err := parseWireDevice(wp.Device)
		if err != nil {
			return nil, err
		}
		se := SealedEntry{CID: c, BlobSize: wp.BlobSize, Device: dev}
		if se.Group, err = parseWireGroup(wp.Group); err != nil {
			return nil, err
		}
		for _, ww := range wp.Wraps {
			sealed, err := b64.DecodeString(ww.Sealed)
			if err != nil {
				return nil, fmt.Errorf("%w: a wrap is not unpadded base64url", ErrManifest)
			}
			se.Wraps = append(se.Wraps, Wrap{Generation: ww.Generation, Sealed: sealed})
		}
		m.Sealed = append(m.Sealed, se)
	}
	if v := m.version(); v != w.Version {
		return nil, fmt.Errorf("%w: version %d with group entries in %d of its private entries (a group entry needs version %d, and only it)",
			ErrManifest, w.Version, m.groupEntries(), manifestVersionGroups)
	}
	again, err := m.Encode() // checks every rule and limit
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(again, b) {
		return nil, fmt.Errorf("%w: not in canonical form (key order, spacing, escapes, number form or repeated keys)", ErrManifest)
	}
	return m, nil
}

func parseWireCID(s string) (cid.Cid, error) {
	c, err := ParseCID(s)
	if err != nil {
		return cid.Undef, fmt.Errorf("%w: %w", ErrManifest, err)
	}
	return c, nil
}

// version is the manifest version m is written with: 2 if it has a
// group entry, else 1.
func (m *Manifest) version() int {
	if m.groupEntries() > 0 {
		return manifestVersionGroups
	}
	return manifestVersion
}

func (m *Manifest) groupEntries() int {
	n := 0
	for _, e := range m.Sealed {
		if e.Group != ([32]byte{}) {
			n++
		}
	}
	return n
}

// parseWireGroup reads an entry's group: "" (absent) is none; anything
// else must be 64 hex digits naming a group ID that is not zero (upper
// case is refused by the canonical comparison).
func parseWireGroup(s string) ([32]byte, error) {
	var g [32]byte
	if s == "" {
		return g, nil
	}
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(g) {
		return g, fmt.Errorf("%w: an entry's group is not 64 hex digits", ErrManifest)
	}
	copy(g[:], b)
	if g == ([32]byte{}) {
		return g, fmt.Errorf("%w: an entry's group ID is zero", ErrManifest)
	}
	return g, nil
}

// wireDevice is the device key's text, "" for none (the key left out).
func wireDevice(k kez.PublicKey) string {
	if k.IsZero() {
		return ""
	}
	return k.String()
}

// parseWireDevice reads an entry's device: "" (absent) is the zero key;
// anything else must be a valid key (an explicit "" is refused by the
// canonical comparison, as the encoder leaves the key out).
func parseWireDevice(s string) (kez.PublicKey, error) {
	if s == "" {
		return kez.PublicKey{}, nil
	}
	k, err := kez.ParsePublicKey(s)
	if err != nil {
		return kez.PublicKey{}, fmt.Errorf("%w: an entry's device: %w", ErrManifest, err)
	}
	return k, nil
}
