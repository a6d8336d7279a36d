package chat

// The body of a sync-history message: a chunk of the history one device
// sends another device of the same person (docs/spec/chat.md §9). Every
// chunk stands alone: it is checked whole, then applied in one
// transaction.

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"fmt"
	"io"
	"time"
	"unicode/utf8"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// ErrBadHistoryChunk reports a sync-history body that does not parse or
// breaks a rule of the format; nothing of it was applied. It wraps
// [ErrMalformed].
var ErrBadHistoryChunk = fmt.Errorf("%w: a history chunk", ErrMalformed)

const (
	historyMagic = "KZH1"
	// historyHeader: magic, compression byte.
	historyHeader = len(historyMagic) + 1
	// maxHistoryPayload bounds a chunk's payload once inflated, so that a
	// small chunk cannot make the receiver inflate without end.
	maxHistoryPayload = 1 << 20

	compressNone    = 0
	compressDeflate = 1

	itemContact = 1
	itemMessage = 2

	msgIncoming  = 1 << 0
	msgRead      = 1 << 1
	msgRef       = 1 << 2
	msgDelivered = 1 << 3
	msgAllBits   = msgIncoming | msgRead | msgRef | msgDelivered

	// maxContactLinks bounds the links of one contact in a chunk.
	maxContactLinks = 4096
)

// historyChunk is the payload of one sync-history message.
type historyChunk struct {
	Transfer [16]byte // random, the same in every chunk of one transfer
	Index    uint32   // 0, 1, 2, … within the transfer
	Last     bool     // the transfer's last chunk
	Contacts []historyContact
	Messages []*Entry
}

// historyContact is a contact as it travels: what the user decided about
// it and its pinned chain, link by link. The key, encryption key and pin
// are those of the verified links, never taken on trust.
type historyContact struct {
	Handle     string
	SigServer  string
	AddedAt    time.Time
	Refreshed  time.Time
	VerifiedAt time.Time
	Flag       ContactFlag
	FlagDetail string
	FlagKey    kez.PublicKey
	FlaggedAt  time.Time
	Links      [][]byte
}

var (
	trustCodes = []Trust{TrustTrusted, TrustHeld, TrustRequest}
	stateCodes = []SendState{"", StateSent, StateFailed}
	flagCodes  = []ContactFlag{FlagNone, FlagKeyChanged, FlagChainRewritten}
)

func codeOf[T comparable](codes []T, v T) (byte, bool) {
	for i, c := range codes {
		if c == v {
			return byte(i), true
		}
	}
	return 0, false
}

// historyWriter appends the fields of the payload.
type historyWriter struct{ b []byte }

func (w *historyWriter) u8(v byte)        { w.b = append(w.b, v) }
func (w *historyWriter) u16(v int)        { w.b = binary.BigEndian.AppendUint16(w.b, uint16(v)) }
func (w *historyWriter) u32(v int)        { w.b = binary.BigEndian.AppendUint32(w.b, uint32(v)) }
func (w *historyWriter) raw(v []byte)     { w.b = append(w.b, v...) }
func (w *historyWriter) str8(s string)    { w.u8(byte(len(s))); w.b = append(w.b, s...) }
func (w *historyWriter) str16(s string)   { w.u16(len(s)); w.b = append(w.b, s...) }
func (w *historyWriter) bytes32(v []byte) { w.u32(len(v)); w.b = append(w.b, v...) }
func (w *historyWriter) time(t time.Time) {
	var ms int64
	if !t.IsZero() {
		ms = t.UnixMilli()
	}
	w.b = binary.BigEndian.AppendUint64(w.b, uint64(ms))
}

// appendContact encodes a contact item.
func (w *historyWriter) contact(c *historyContact) {
	w.u8(itemContact)
	w.str16(c.Handle)
	w.str16(c.SigServer)
	w.time(c.AddedAt)
	w.time(c.Refreshed)
	w.time(c.VerifiedAt)
	code, _ := codeOf(flagCodes, c.Flag)
	w.u8(code)
	w.str16(c.FlagDetail)
	w.raw(c.FlagKey[:])
	w.time(c.FlaggedAt)
	w.u16(len(c.Links))
	for _, l := range c.Links {
		w.bytes32(l)
	}
}

// message encodes a message item.
func (w *historyWriter) message(e *Entry) {
	w.u8(itemMessage)
	w.raw(e.ID[:])
	w.raw(e.From[:])
	w.raw(e.To[:])
	var bits byte
	if e.Incoming {
		bits |= msgIncoming
	}
	if e.Read {
		bits |= msgRead
	}
	if !e.Ref.IsZero() {
		bits |= msgRef
	}
	if !e.DeliveredAt.IsZero() {
		bits |= msgDelivered
	}
	w.u8(bits)
	w.str16(e.PeerHandle)
	w.time(e.SentAt)
	w.time(e.ReceivedAt)
	w.str8(string(e.Kind))
	if !e.Ref.IsZero() {
		w.raw(e.Ref[:])
	}
	w.bytes32(e.Body)
	t, _ := codeOf(trustCodes, e.Trust)
	s, _ := codeOf(stateCodes, e.State)
	w.u8(t)
	w.u8(s)
	if !e.DeliveredAt.IsZero() {
		w.time(e.DeliveredAt)
	}
}

// encodeHistoryBody makes the body of a sync-history message from a
// payload: deflated when that makes it smaller.
func encodeHistoryBody(payload []byte) []byte {
	var buf bytes.Buffer
	buf.WriteString(historyMagic)
	buf.WriteByte(compressDeflate)
	fw, _ := flate.NewWriter(&buf, flate.BestCompression) // a valid level never fails
	fw.Write(payload)
	fw.Close()
	if buf.Len() < historyHeader+len(payload) {
		return buf.Bytes()
	}
	return append([]byte(historyMagic+"\x00"), payload...)
}

// historyReader reads the fields of a payload; the first error sticks.
type historyReader struct {
	b   []byte
	err error
}

func (r *historyReader) fail(format string, a ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", ErrBadHistoryChunk, fmt.Sprintf(format, a...))
	}
}

func (r *historyReader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.b) < n {
		r.fail("truncated")
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *historyReader) u8() byte {
	if v := r.take(1); v != nil {
		return v[0]
	}
	return 0
}

func (r *historyReader) u16() int {
	if v := r.take(2); v != nil {
		return int(binary.BigEndian.Uint16(v))
	}
	return 0
}

func (r *historyReader) u32() int {
	if v := r.take(4); v != nil {
		return int(binary.BigEndian.Uint32(v))
	}
	return 0
}

func (r *historyReader) str(n int, what string) string {
	v := r.take(n)
	if r.err == nil && !utf8.Valid(v) {
		r.fail("%s is not UTF-8", what)
	}
	return string(v)
}

func (r *historyReader) str8(what string) string  { return r.str(int(r.u8()), what) }
func (r *historyReader) str16(what string) string { return r.str(r.u16(), what) }

func (r *historyReader) key() (k kez.PublicKey) {
	copy(k[:], r.take(len(k)))
	return k
}

func (r *historyReader) id() (id MessageID) {
	copy(id[:], r.take(len(id)))
	return id
}

// time reads a Unix millisecond time; 0 is the zero time if zeroOK.
func (r *historyReader) time(what string, zeroOK bool) time.Time {
	v := r.take(8)
	if v == nil {
		return time.Time{}
	}
	ms := int64(binary.BigEndian.Uint64(v))
	switch {
	case ms < 0:
		r.fail("%s is negative", what)
	case ms == 0 && zeroOK:
		return time.Time{}
	case ms == 0:
		r.fail("%s is missing", what)
	}
	return time.UnixMilli(ms)
}

func (r *historyReader) code(n int, what string) byte {
	v := r.u8()
	if int(v) >= n {
		r.fail("unknown %s %d", what, v)
		return 0
	}
	return v
}

// decodeHistoryBody parses the body of a sync-history message and checks
// every rule that needs no state: me is the person the history belongs
// to. Chains are verified (sigchain.Verify) and must be of the keys they
// claim. Errors wrap ErrBadHistoryChunk.
func decodeHistoryBody(body []byte, me kez.PublicKey) (*historyChunk, error) {
	if len(body) < historyHeader || string(body[:len(historyMagic)]) != historyMagic {
		return nil, fmt.Errorf("%w: not a history chunk", ErrBadHistoryChunk)
	}
	payload := body[historyHeader:]
	switch body[len(historyMagic)] {
	case compressNone:
	case compressDeflate:
		fr := flate.NewReader(bytes.NewReader(payload))
		p, err := io.ReadAll(io.LimitReader(fr, maxHistoryPayload+1))
		if err != nil {
			return nil, fmt.Errorf("%w: damaged compression: %w", ErrBadHistoryChunk, err)
		}
		if len(p) > maxHistoryPayload {
			return nil, fmt.Errorf("%w: more than %d bytes once inflated", ErrBadHistoryChunk, maxHistoryPayload)
		}
		payload = p
	default:
		return nil, fmt.Errorf("%w: unknown compression %d", ErrBadHistoryChunk, body[len(historyMagic)])
	}
	r := &historyReader{b: payload}
	c := &historyChunk{}
	copy(c.Transfer[:], r.take(16))
	c.Index = uint32(r.u32())
	c.Last = r.code(2, "last flag") == 1
	n := r.u32()
	if r.err == nil && n > len(r.b) {
		r.fail("%d items in %d bytes", n, len(r.b))
	}
	for i := 0; i < n && r.err == nil; i++ {
		switch t := r.u8(); t {
		case itemContact:
			if len(c.Messages) > 0 {
				r.fail("a contact after the messages")
			}
			c.Contacts = append(c.Contacts, r.contact())
		case itemMessage:
			if e := r.message(me); e != nil {
				c.Messages = append(c.Messages, e)
			}
		default:
			r.fail("unknown item type %d", t)
		}
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail("%d bytes after the last item", len(r.b))
	}
	if r.err != nil {
		return nil, r.err
	}
	return c, nil
}

func (r *historyReader) contact() historyContact {
	var c historyContact
	c.Handle = r.str16("a handle")
	c.SigServer = r.str16("a sig-server")
	c.AddedAt = r.time("added_at", false)
	c.Refreshed = r.time("refreshed_at", false)
	c.VerifiedAt = r.time("verified_at", true)
	c.Flag = flagCodes[r.code(len(flagCodes), "contact flag")]
	c.FlagDetail = r.str16("a flag detail")
	c.FlagKey = r.key()
	c.FlaggedAt = r.time("flagged_at", true)
	n := r.u16()
	if r.err == nil && (n == 0 || n > maxContactLinks) {
		r.fail("contact %q has %d links", c.Handle, n)
	}
	for i := 0; i < n && r.err == nil; i++ {
		c.Links = append(c.Links, r.take(r.u32()))
	}
	if r.err != nil {
		return c
	}
	if c.Handle == "" || c.SigServer == "" {
		r.fail("a contact without a handle or a sig-server")
	}
	if (c.Flag == FlagNone) != c.FlaggedAt.IsZero() || (c.Flag == FlagKeyChanged) != !c.FlagKey.IsZero() || (c.Flag == FlagNone && c.FlagDetail != "") {
		r.fail("contact %q: its flag fields do not agree", c.Handle)
	}
	return c
}

func (r *historyReader) message(me kez.PublicKey) *Entry {
	e := &Entry{}
	e.ID = r.id()
	e.From, e.To = r.key(), r.key()
	bits := r.u8()
	if bits&^msgAllBits != 0 {
		r.fail("reserved message bits set")
	}
	e.Incoming, e.Read = bits&msgIncoming != 0, bits&msgRead != 0
	e.PeerHandle = r.str16("a peer handle")
	e.SentAt = r.time("sent_at", false)
	e.ReceivedAt = r.time("received_at", false)
	e.Kind = Kind(r.str8("a kind"))
	if bits&msgRef != 0 {
		if e.Ref = r.id(); r.err == nil && e.Ref.IsZero() {
			r.fail("a zero ref")
		}
	}
	e.Body = r.take(r.u32())
	e.Trust = trustCodes[r.code(len(trustCodes), "trust")]
	e.State = stateCodes[r.code(len(stateCodes), "send state")]
	if bits&msgDelivered != 0 {
		e.DeliveredAt = r.time("delivered_at", false)
	}
	if r.err != nil {
		return nil
	}
	m := Message{ID: e.ID, Kind: e.Kind, Ref: e.Ref, Body: e.Body}
	if err := m.validate(); err != nil {
		r.fail("message %s: %v", e.ID, err)
		return nil
	}
	if e.Kind == KindReceipt || e.Kind == KindSessionReset || isSyncKind(e.Kind) {
		r.fail("message %s: a %s is not history", e.ID, e.Kind)
	}
	if e.Body == nil {
		e.Body = []byte{}
	}
	if e.Incoming {
		e.Peer = e.From
		if e.To != me || e.State != "" || !e.DeliveredAt.IsZero() {
			r.fail("received message %s: not to %s, or with a send state", e.ID, me)
		}
	} else {
		e.Peer = e.To
		if e.From != me || e.State == "" || e.Trust != TrustTrusted || !e.Read {
			r.fail("sent message %s: not from %s, or without its send state", e.ID, me)
		}
	}
	if e.Peer.IsZero() {
		r.fail("message %s: a zero key", e.ID)
	}
	return e
}

// verifyContactChain verifies the links of a contact item and returns
// the parsed links and their state.
func verifyContactChain(c *historyContact) ([]*sigchain.Link, *sigchain.State, error) {
	links := make([]*sigchain.Link, 0, len(c.Links))
	for _, b := range c.Links {
		l, err := sigchain.ParseLink(b)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: contact %q: %w", ErrBadHistoryChunk, c.Handle, err)
		}
		links = append(links, l)
	}
	// As for the stored chains: verified once when pinned; the clock is
	// not the question here.
	st, err := sigchain.Verify(links, sigchain.WithMaxFuture(1<<62))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: contact %q: %w", ErrBadHistoryChunk, c.Handle, err)
	}
	return links, st, nil
}
