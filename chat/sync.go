package chat

// The sync messages between a person's own devices (docs/spec/chat.md
// §8.4): sealed in the sessions between those devices like any message,
// never shown, and refused from any device that is not one of the user's
// own. Their body layouts are below; the test vectors are
// chat/testdata/sync-vectors.json.

import (
	"encoding/binary"
	"fmt"
	"unicode/utf8"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/kez"
)

// Kinds of the sync messages between one person's devices.
const (
	// KindSyncSent is the sent copy of a message another of the user's
	// devices sent: same message ID, sent_at and ref; its body names the
	// recipient person and the original kind and body.
	KindSyncSent Kind = "sync-sent"
	// KindSyncRead says which received messages were shown on another of
	// the user's devices.
	KindSyncRead Kind = "sync-read"
	// KindSyncContact is a contact another of the user's devices pinned
	// (added or accepted) or verified.
	KindSyncContact Kind = "sync-contact"
	// KindSyncHistory carries contacts and history to a newly linked
	// device.
	KindSyncHistory Kind = "sync-history"
)

// isSyncKind reports whether k is a sync kind (accepted only from the
// user's own devices).
func isSyncKind(k Kind) bool {
	return len(k) > 5 && k[:5] == "sync-"
}

// syncSentOverhead is what a sync-sent body adds to the original body:
// the recipient, the kind's length and the longest kind.
const syncSentOverhead = keyLen + 1 + maxKind

// maxBodyOf is the largest body of a message of kind k: MaxBodySize, and
// for a sent copy what it adds to the original.
func maxBodyOf(k Kind) int {
	if k == KindSyncSent {
		return MaxBodySize + syncSentOverhead
	}
	return MaxBodySize
}

// syncSent is what a sync-sent message says (with its message's ID,
// sent_at and ref).
type syncSent struct {
	To   kez.PublicKey // the recipient person
	Kind Kind
	Body []byte
}

// marshalSyncSent returns the body of the sent copy of m, sent to to:
//
//	32        to        the recipient person's key
//	1         kind_len  1..32
//	kind_len  kind      the original kind
//	rest      body      the original body
func marshalSyncSent(to kez.PublicKey, m *Message) []byte {
	b := make([]byte, 0, keyLen+1+len(m.Kind)+len(m.Body))
	b = append(b, to[:]...)
	b = append(b, byte(len(m.Kind)))
	b = append(b, m.Kind...)
	return append(b, m.Body...)
}

// parseSyncSent parses a sync-sent body. The original message keeps the
// rules of validate (a text body is UTF-8, a sync kind cannot be nested).
func parseSyncSent(body []byte) (syncSent, error) {
	if len(body) < keyLen+2 {
		return syncSent{}, fmt.Errorf("%w: a sync-sent body is truncated (%d bytes)", ErrMalformed, len(body))
	}
	var s syncSent
	copy(s.To[:], body[:keyLen])
	kl := int(body[keyLen])
	r := body[keyLen+1:]
	if kl == 0 || kl > maxKind || len(r) < kl {
		return syncSent{}, fmt.Errorf("%w: a sync-sent body has a bad kind length %d", ErrMalformed, kl)
	}
	s.Kind, s.Body = Kind(r[:kl]), r[kl:]
	if s.To.IsZero() {
		return syncSent{}, fmt.Errorf("%w: a sync-sent body names the zero key", ErrMalformed)
	}
	if isSyncKind(s.Kind) || s.Kind == KindReceipt || s.Kind == KindSessionReset {
		return syncSent{}, fmt.Errorf("%w: a sync-sent body carries kind %q", ErrMalformed, s.Kind)
	}
	m := Message{ID: MessageID{1}, Kind: s.Kind, Body: s.Body}
	if err := m.validate(); err != nil {
		return syncSent{}, err
	}
	return s, nil
}

// readMark names a message shown: its sender (a person) and ID.
type readMark struct {
	From kez.PublicKey
	ID   MessageID
}

// maxReadMarks is the most messages one sync-read names.
const maxReadMarks = MaxBodySize / (keyLen + idLen)

// marshalSyncRead returns the body of a sync-read naming marks (1 to
// maxReadMarks): for each, the sender's key (32 bytes) and the message ID
// (16 bytes), nothing else.
func marshalSyncRead(marks []readMark) []byte {
	b := make([]byte, 0, len(marks)*(keyLen+idLen))
	for _, m := range marks {
		b = append(b, m.From[:]...)
		b = append(b, m.ID[:]...)
	}
	return b
}

// parseSyncRead parses a sync-read body.
func parseSyncRead(body []byte) ([]readMark, error) {
	const rec = keyLen + idLen
	if len(body) == 0 || len(body)%rec != 0 || len(body)/rec > maxReadMarks {
		return nil, fmt.Errorf("%w: a sync-read body of %d bytes is not 1 to %d records of %d bytes", ErrMalformed, len(body), maxReadMarks, rec)
	}
	out := make([]readMark, 0, len(body)/rec)
	for r := body; len(r) > 0; r = r[rec:] {
		var m readMark
		copy(m.From[:], r[:keyLen])
		copy(m.ID[:], r[keyLen:rec])
		if m.From.IsZero() || m.ID.IsZero() {
			return nil, fmt.Errorf("%w: a sync-read record names the zero key or ID", ErrMalformed)
		}
		out = append(out, m)
	}
	return out, nil
}

// Operations of a sync-contact message.
const (
	syncContactPinned   = 1 // added or accepted: pin Key at (Seqno, Head)
	syncContactVerified = 2 // the fingerprint or safety number of Key was compared
)

// syncContact is what a sync-contact message says.
type syncContact struct {
	Op     byte
	Key    kez.PublicKey // the contact's primary key
	Seqno  uint64        // pinned: the chain head's seqno; else 0
	Head   cid.Cid       // pinned: the chain head's link ID; else undefined
	Handle string        // canonical
}

// maxHeadLen bounds a link ID in a sync-contact body.
const maxHeadLen = 64

// marshalSyncContact returns the body of a sync-contact:
//
//	1           op          1 pinned, 2 verified
//	32          key         the contact's primary key
//	8           seqno       u64, the pinned head's seqno (op 1), else 0
//	1           head_len    0..64 (0 unless op 1)
//	head_len    head        the pinned head's link ID, binary CID
//	1           handle_len  1..255
//	handle_len  handle      the canonical handle, UTF-8
func marshalSyncContact(s syncContact) []byte {
	var head []byte
	if s.Op == syncContactPinned {
		head = s.Head.Bytes()
	}
	b := make([]byte, 0, 1+keyLen+8+1+len(head)+1+len(s.Handle))
	b = append(b, s.Op)
	b = append(b, s.Key[:]...)
	b = binary.BigEndian.AppendUint64(b, s.Seqno)
	b = append(b, byte(len(head)))
	b = append(b, head...)
	b = append(b, byte(len(s.Handle)))
	return append(b, s.Handle...)
}

// parseSyncContact parses a sync-contact body.
func parseSyncContact(body []byte) (syncContact, error) {
	bad := func(why string) (syncContact, error) {
		return syncContact{}, fmt.Errorf("%w: a sync-contact body: %s", ErrMalformed, why)
	}
	if len(body) < 1+keyLen+8+1+1 {
		return bad("truncated")
	}
	var s syncContact
	s.Op = body[0]
	copy(s.Key[:], body[1:1+keyLen])
	r := body[1+keyLen:]
	s.Seqno = binary.BigEndian.Uint64(r)
	hl := int(r[8])
	r = r[9:]
	if hl > maxHeadLen || len(r) < hl+1 {
		return bad("bad head length")
	}
	head := r[:hl]
	r = r[hl:]
	nl := int(r[0])
	r = r[1:]
	if nl == 0 || len(r) != nl || !utf8.Valid(r) {
		return bad("bad handle")
	}
	s.Handle = string(r)
	if s.Key.IsZero() {
		return bad("the zero key")
	}
	switch s.Op {
	case syncContactPinned:
		n, c, err := cid.CidFromBytes(head)
		if err != nil || n != len(head) || s.Seqno == 0 {
			return bad("bad pinned head")
		}
		s.Head = c
	case syncContactVerified:
		if hl != 0 || s.Seqno != 0 {
			return bad("a head in a verified record")
		}
	default:
		return bad(fmt.Sprintf("unknown op %d", s.Op))
	}
	return s, nil
}
