package translog

import (
	"bytes"
	"encoding/base32"
	"fmt"
	"strconv"

	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/kez-lat/kez-chat/kez"
)

// MaxEntrySize bounds the bytes of one entry.
const MaxEntrySize = 256

// maxSeqno is the largest integer canonical JSON allows (2^53-1).
const maxSeqno = 1<<53 - 1

// Entry is one leaf of the log: a sigchain link of Key at Seqno with link
// ID ID (the "bafkrei…" text of docs/spec/sigchain.md §4), or, when Seqno is
// 0 and ID is "", a deletion entry: the server deleted Key's chain, whose
// history starts again at seqno 1.
type Entry struct {
	Key   kez.PublicKey
	Seqno uint64
	ID    string
}

// IsDeletion reports whether e is a deletion entry.
func (e Entry) IsDeletion() bool { return e.Seqno == 0 && e.ID == "" }

// Marshal returns the canonical JSON of e:
// {"id":"<ID>","key":"U…","seqno":N}. It does not check e; [ParseEntry]
// does.
func (e Entry) Marshal() []byte {
	b := make([]byte, 0, 160)
	b = append(b, `{"id":"`...)
	b = append(b, e.ID...)
	b = append(b, `","key":"`...)
	b = append(b, e.Key.String()...)
	b = append(b, `","seqno":`...)
	b = strconv.AppendUint(b, e.Seqno, 10)
	return append(b, '}')
}

// LeafHash returns the RFC 6962 leaf hash of e: SHA-256(0x00 || Marshal()).
func (e Entry) LeafHash() [32]byte {
	var h [32]byte
	copy(h[:], rfc6962.DefaultHasher.HashLeaf(e.Marshal()))
	return h
}

// String returns the entry's canonical JSON.
func (e Entry) String() string { return string(e.Marshal()) }

var (
	b32       = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)
	cidPrefix = []byte{0x01, 0x55, 0x12, 0x20} // CIDv1, raw, sha2-256, 32 bytes
)

// idTextLen is the length of a link ID's text: "b" + base32 of 36 bytes.
const idTextLen = 1 + (36*8+4)/5

// checkID reports whether s is a link ID in its one text form.
func checkID(s string) error {
	if len(s) != idTextLen || s[0] != 'b' {
		return fmt.Errorf("%w: id is not a %d-character CIDv1 text", ErrBadEntry, idTextLen)
	}
	var buf [36]byte
	n, err := b32.Decode(buf[:], []byte(s[1:]))
	if err != nil || n != 36 || !bytes.Equal(buf[:4], cidPrefix) {
		return fmt.Errorf("%w: id is not a raw sha2-256 CIDv1 in lower-case base32", ErrBadEntry)
	}
	if b32.EncodeToString(buf[:]) != s[1:] {
		return fmt.Errorf("%w: id is not in canonical base32", ErrBadEntry)
	}
	return nil
}

// ParseEntry parses an entry. It accepts only the canonical form Marshal
// writes, with a valid key, a link ID and seqno ≥ 1, or "" and seqno 0 (a
// deletion entry); anything else is [ErrBadEntry].
func ParseEntry(b []byte) (Entry, error) {
	var e Entry
	if len(b) > MaxEntrySize {
		return e, fmt.Errorf("%w: %d bytes", ErrBadEntry, len(b))
	}
	rest, ok := bytes.CutPrefix(b, []byte(`{"id":"`))
	if !ok {
		return e, fmt.Errorf("%w: want {\"id\":\"", ErrBadEntry)
	}
	i := bytes.IndexByte(rest, '"')
	if i < 0 {
		return e, fmt.Errorf("%w: unterminated id", ErrBadEntry)
	}
	id := string(rest[:i])
	if id != "" {
		if err := checkID(id); err != nil {
			return e, err
		}
	}
	rest, ok = bytes.CutPrefix(rest[i+1:], []byte(`,"key":"`))
	if !ok || len(rest) < 57 || rest[56] != '"' {
		return e, fmt.Errorf("%w: want a \"key\" of 56 characters after \"id\"", ErrBadEntry)
	}
	key, err := kez.ParsePublicKey(string(rest[:56]))
	if err != nil {
		return e, fmt.Errorf("%w: %w", ErrBadEntry, err)
	}
	rest, ok = bytes.CutPrefix(rest[57:], []byte(`,"seqno":`))
	if !ok || len(rest) < 2 || rest[len(rest)-1] != '}' {
		return e, fmt.Errorf("%w: want \"seqno\" after \"key\", then }", ErrBadEntry)
	}
	digits := rest[:len(rest)-1]
	seqno, err := strconv.ParseUint(string(digits), 10, 64)
	if err != nil || seqno > maxSeqno || (digits[0] == '0' && len(digits) > 1) {
		return e, fmt.Errorf("%w: seqno is not a canonical integer", ErrBadEntry)
	}
	if (seqno == 0) != (id == "") {
		return e, fmt.Errorf("%w: seqno 0 goes with id \"\" (a deletion) and only with it", ErrBadEntry)
	}
	return Entry{Key: key, Seqno: seqno, ID: id}, nil
}
