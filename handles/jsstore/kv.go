package jsstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/nats.go/jetstream"
)

// formatVersion is the "v" of every value this package writes.
const formatVersion = 1

// entry is the value at name.<domain>.<skeleton>, or, for a twin, at the
// key of the skeleton rule it was claimed under (see legacyKey).
type entry struct {
	V         int    `json:"v"`
	Domain    string `json:"domain"`
	Name      string `json:"name"`
	Key       string `json:"key"`
	EncKey    []byte `json:"enc_key,omitempty"`
	Gen       uint32 `json:"gen"`
	ClaimedAt int64  `json:"claimed_at"`
	UpdatedAt int64  `json:"updated_at"`
	Suspended bool   `json:"suspended"`
	// Twins are names at this domain with the same skeleton that were
	// claimed under an older skeleton rule and stay at their old keys.
	Twins []string `json:"twins,omitempty"`
	// Released marks an entry whose handle was released while it had
	// twins: it is no handle any more, only the skeleton's lock, kept
	// while a twin lives.
	Released bool `json:"released,omitempty"`

	key kez.PublicKey // Key, parsed
}

// maxTwins bounds an entry's Twins, well inside MaxValueSize.
const maxTwins = 64

// index is the value at key.<U…>: the handle the key holds.
type index struct {
	V      int    `json:"v"`
	Domain string `json:"domain"`
	Name   string `json:"name"`
}

func (ix index) handle() handles.Handle { return handles.Handle{Name: ix.Name, Domain: ix.Domain} }

func newEntry(rec handles.Record, now time.Time) entry {
	return entry{
		V: formatVersion, Domain: rec.Handle.Domain, Name: rec.Handle.Name, Key: rec.Key.String(),
		EncKey: rec.EncryptionKey, Gen: rec.Generation,
		ClaimedAt: now.UnixMilli(), UpdatedAt: now.UnixMilli(), key: rec.Key,
	}
}

func (e entry) handle() handles.Handle { return handles.Handle{Name: e.Name, Domain: e.Domain} }

func (e entry) record() handles.Record {
	return handles.Record{
		Handle: e.handle(), Key: e.key, EncryptionKey: e.EncKey, Generation: e.Gen,
		ClaimedAt: time.UnixMilli(e.ClaimedAt), UpdatedAt: time.UnixMilli(e.UpdatedAt), Suspended: e.Suspended,
	}
}

func (e entry) encode() []byte {
	b, err := json.Marshal(e)
	if err != nil {
		panic(err) // plain strings, ints and bytes always marshal
	}
	return b
}

func encodeIndex(h handles.Handle) []byte {
	b, err := json.Marshal(index{V: formatVersion, Domain: h.Domain, Name: h.Name})
	if err != nil {
		panic(err)
	}
	return b
}

// decodeEntry parses a stored entry. The bucket is the operator's, so the
// bytes are checked like any other input.
func decodeEntry(b []byte) (entry, error) {
	var e entry
	if err := decodeValue(b, &e, &e.V); err != nil {
		return entry{}, err
	}
	if e.Domain == "" || e.Name == "" {
		return entry{}, errors.New("the entry has no domain or name")
	}
	if err := checkHandle(e.handle()); err != nil {
		return entry{}, fmt.Errorf("the entry's %w", err)
	}
	k, err := kez.ParsePublicKey(e.Key)
	if err != nil {
		return entry{}, fmt.Errorf("the entry's key: %w", err)
	}
	if len(e.Twins) > maxTwins {
		return entry{}, fmt.Errorf("the entry has %d twins; at most %d are kept", len(e.Twins), maxTwins)
	}
	for _, n := range e.Twins {
		t := handles.Handle{Name: n, Domain: e.Domain}
		if err := checkHandle(t); err != nil || n == e.Name || handles.Skeleton(n) != handles.Skeleton(e.Name) {
			return entry{}, fmt.Errorf("the entry's twin %q is not another valid name with its skeleton", n)
		}
	}
	e.key = k
	return e, nil
}

func decodeIndex(b []byte) (index, error) {
	var ix index
	if err := decodeValue(b, &ix, &ix.V); err != nil {
		return index{}, err
	}
	if ix.Domain == "" || ix.Name == "" {
		return index{}, errors.New("the index has no domain or name")
	}
	if err := checkHandle(ix.handle()); err != nil {
		return index{}, fmt.Errorf("the index's %w", err)
	}
	return ix, nil
}

// checkHandle refuses a stored handle that the handle rules would not
// produce (development domains included: a registry may serve one), such
// as a name with bytes that are not UTF-8, which JSON decoding would
// silently replace.
func checkHandle(h handles.Handle) error {
	p, err := handles.Rules{AllowLocal: true}.Parse(h.String())
	if err != nil {
		return fmt.Errorf("handle %q is not valid: %w", h.String(), err)
	}
	if p != h {
		return fmt.Errorf("handle %q is not in canonical form (%q)", h.String(), p.String())
	}
	return nil
}

func decodeValue(b []byte, v any, version *int) error {
	if len(b) > MaxValueSize {
		return fmt.Errorf("the value is %d bytes; at most %d are read", len(b), MaxValueSize)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("the value is not JSON of the expected shape: %w", err)
	}
	switch {
	case *version > formatVersion:
		return fmt.Errorf("the value has format version %d, newer than this program's %d; upgrade the program", *version, formatVersion)
	case *version < 1:
		return errors.New("the value has no format version")
	}
	return nil
}

// nameKey is the bucket key of h's entry: name.<domain>.<skeleton>.
func nameKey(h handles.Handle) (string, error) {
	return skeletonKey(h, handles.Skeleton(h.Name))
}

// legacyKey is the bucket key h's entry had under skeleton rule 1, which
// only dropped the separators. A name claimed then whose skeleton another
// name holds now (a twin) stays there; no key of the current rule is ever
// a legacy key of another name, since every current skeleton is its own
// skeleton and such a legacy one is not.
func legacyKey(h handles.Handle) (string, error) {
	return skeletonKey(h, strings.NewReplacer(".", "", "-", "", "_", "").Replace(h.Name))
}

func skeletonKey(h handles.Handle, sk string) (string, error) {
	if sk == "" || strings.ContainsFunc(sk, func(r rune) bool { return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') }) {
		return "", fmt.Errorf("jsstore: the name %q is not a checked handle name (lower-case a-z, 0-9, . - _)", h.Name)
	}
	return "name." + domainToken(h.Domain) + "." + sk, nil
}

// indexKey is the bucket key of key's index: key.<U…>.
func indexKey(k kez.PublicKey) string { return "key." + k.String() }

// domainToken writes a domain as bucket-key tokens: a-z, 0-9, '-' and
// inner dots stay, every other byte becomes '_' and two hex digits. The
// mapping is one to one, and the result is never empty.
func domainToken(d string) string {
	const hex = "0123456789abcdef"
	var b strings.Builder
	for i := 0; i < len(d); i++ {
		c := d[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-':
			b.WriteByte(c)
		case c == '.' && i > 0 && i < len(d)-1 && d[i-1] != '.':
			b.WriteByte(c)
		default:
			b.WriteByte('_')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
		}
	}
	if b.Len() == 0 {
		return "_"
	}
	return b.String()
}

// got is one leader read of a bucket key. found is false for a key that
// never existed (rev 0) or was deleted (rev is the delete marker's, which
// a create must expect).
type got struct {
	value []byte
	rev   uint64
	time  time.Time // when the server stored this revision
	found bool
}

// get reads key from the stream leader ($JS.API.STREAM.MSG.GET), never
// from a replica that may lag; see the package comment.
func (s *Store) get(ctx context.Context, key string) (got, error) {
	m, err := s.leader.Last(ctx, s.subjPrefix+key)
	if err != nil {
		return got{}, fmt.Errorf("jsstore: %w", err)
	}
	if m == nil {
		return got{}, nil
	}
	g := got{value: m.Data, rev: m.Seq, time: m.Time, found: true}
	removed, err := m.KVRemoved()
	if err != nil {
		return got{}, fmt.Errorf("jsstore: %w", err)
	}
	if removed {
		g.value, g.found = nil, false
	}
	return g, nil
}

// put writes value at key if the key's revision is still rev (0: the key
// does not exist), and returns the new revision. errConflict means it moved.
func (s *Store) put(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	n, err := s.kv.Update(ctx, key, value, rev)
	if isConflict(err) {
		return 0, errConflict
	}
	if err != nil {
		return 0, fmt.Errorf("jsstore: writing %s: %w", key, err)
	}
	return n, nil
}

// del deletes key if its revision is still rev.
func (s *Store) del(ctx context.Context, key string, rev uint64) error {
	err := s.kv.Delete(ctx, key, jetstream.LastRevision(rev))
	if isConflict(err) {
		return errConflict
	}
	if err != nil {
		return fmt.Errorf("jsstore: deleting %s: %w", key, err)
	}
	return nil
}

// errConflict: a compare-and-set lost; read again and retry.
var errConflict = errors.New("jsstore: the value changed meanwhile")

// isConflict reports JetStream's "wrong last sequence" (10071, or 10164 on
// replicated streams): a compare-and-set that lost.
func isConflict(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists)
	}
	return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}
