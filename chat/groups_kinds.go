package chat

// The inner message kinds of groups (docs/spec/chat.md §10.2): sealed in
// the pairwise sessions like any message, never shown, never kept in the
// history.

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/ipfs/go-cid"
)

// Kinds of the group messages.
const (
	// KindGroupUpdate tells a member (or a member just removed) that a
	// group's membership chain has a new head.
	KindGroupUpdate Kind = "group-update"
	// KindGroupKey carries a sender key distribution
	// (session.SenderKeyDistribution).
	KindGroupKey Kind = "group-key"
	// KindGroupRead says which of the recipient's group messages the
	// sender showed to its user.
	KindGroupRead Kind = "group-read"
)

// isGroupKind reports whether k is one of the group kinds.
func isGroupKind(k Kind) bool {
	return k == KindGroupUpdate || k == KindGroupKey || k == KindGroupRead
}

// maxGroupReadIDs bounds the message IDs of one group-read.
const maxGroupReadIDs = 256

// groupUpdate is the body of a group-update message.
type groupUpdate struct {
	Group     string  // name@domain
	Head      cid.Cid // the link ID of the new head
	Seqno     uint64
	SigServer string // a hint: checked against the resolver (§10.1)
}

// marshalGroupUpdate returns the canonical body:
// {"group":"…","head":"…","seqno":N,"sig_server":"…"}.
func marshalGroupUpdate(u groupUpdate) []byte {
	var b bytes.Buffer
	b.WriteString(`{"group":`)
	b.Write(jsonString(u.Group))
	b.WriteString(`,"head":`)
	b.Write(jsonString(u.Head.String()))
	b.WriteString(`,"seqno":`)
	b.WriteString(strconv.FormatUint(u.Seqno, 10))
	b.WriteString(`,"sig_server":`)
	b.Write(jsonString(u.SigServer))
	b.WriteByte('}')
	return b.Bytes()
}

// jsonString is s as a JSON string, HTML characters not escaped.
func jsonString(s string) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// parseGroupUpdate parses a group-update body: exactly the canonical form
// marshalGroupUpdate writes, a group name with one '@', a head that is a
// CID, a seqno of at least 1 and an https (or http) URL.
func parseGroupUpdate(body []byte) (groupUpdate, error) {
	var raw struct {
		Group     string `json:"group"`
		Head      string `json:"head"`
		Seqno     uint64 `json:"seqno"`
		SigServer string `json:"sig_server"`
	}
	bad := func(why string) (groupUpdate, error) {
		return groupUpdate{}, fmt.Errorf("%w: a group-update body %s", ErrMalformed, why)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return bad("is not the expected JSON")
	}
	name, domain, ok := strings.Cut(raw.Group, "@")
	if !ok || name == "" || domain == "" || strings.Contains(domain, "@") || len(raw.Group) > 255 {
		return bad("names no group")
	}
	head, err := cid.Parse(raw.Head)
	if err != nil {
		return bad("has a head that is no link ID")
	}
	if raw.Seqno == 0 {
		return bad("has seqno 0")
	}
	if !strings.HasPrefix(raw.SigServer, "https://") && !strings.HasPrefix(raw.SigServer, "http://") || len(raw.SigServer) > 512 {
		return bad("has no sig-server URL")
	}
	u := groupUpdate{Group: raw.Group, Head: head, Seqno: raw.Seqno, SigServer: raw.SigServer}
	if !bytes.Equal(marshalGroupUpdate(u), body) {
		return bad("is not canonical")
	}
	return u, nil
}

// groupRead is the body of a group-read message.
type groupRead struct {
	Group string
	IDs   []MessageID // sorted, distinct, not zero
}

// marshalGroupRead returns the canonical body {"group":"…","ids":[…]};
// it sorts the IDs and drops repeats.
func marshalGroupRead(r groupRead) []byte {
	ids := slices.Clone(r.IDs)
	slices.SortFunc(ids, func(a, b MessageID) int { return bytes.Compare(a[:], b[:]) })
	ids = slices.Compact(ids)
	var b bytes.Buffer
	b.WriteString(`{"group":`)
	b.Write(jsonString(r.Group))
	b.WriteString(`,"ids":[`)
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('"')
		b.WriteString(hex.EncodeToString(id[:]))
		b.WriteByte('"')
	}
	b.WriteString("]}")
	return b.Bytes()
}

// parseGroupRead parses a group-read body: the canonical form, 1 to 256
// distinct non-zero IDs in lower-case hex, sorted.
func parseGroupRead(body []byte) (groupRead, error) {
	var raw struct {
		Group string   `json:"group"`
		IDs   []string `json:"ids"`
	}
	bad := func(why string) (groupRead, error) {
		return groupRead{}, fmt.Errorf("%w: a group-read body %s", ErrMalformed, why)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return bad("is not the expected JSON")
	}
	if name, domain, ok := strings.Cut(raw.Group, "@"); !ok || name == "" || domain == "" || len(raw.Group) > 255 {
		return bad("names no group")
	}
	if len(raw.IDs) == 0 || len(raw.IDs) > maxGroupReadIDs {
		return bad(fmt.Sprintf("names %d messages (1 to %d)", len(raw.IDs), maxGroupReadIDs))
	}
	r := groupRead{Group: raw.Group, IDs: make([]MessageID, len(raw.IDs))}
	for i, s := range raw.IDs {
		id, err := ParseMessageID(s)
		if err != nil || id.IsZero() {
			return bad("names a message ID that is not 32 hex digits, or zero")
		}
		r.IDs[i] = id
	}
	if !bytes.Equal(marshalGroupRead(r), body) {
		return bad("is not canonical (IDs sorted, distinct, lower-case)")
	}
	return r, nil
}
