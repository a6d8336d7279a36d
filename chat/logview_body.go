package chat

// The log-view body (docs/spec/chat.md §11): the sender's newest
// checkpoints of the sig-servers' logs and its own chain's head, so that
// two people who were shown different histories find out.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/sigchain"
)

// KindLogView carries the sender's view of the sig-servers' transparency
// logs and of its own chain (docs/spec/chat.md §11). The client sends it
// to a contact before a message now and then, and never shows or stores
// it.
const KindLogView Kind = "log-view"

// Limits of a log-view body.
const (
	maxLogViewNotes    = 4    // checkpoints in one body
	maxLogViewNoteSize = 4096 // bytes of one signed note
)

// logView is the body of a log-view message.
type logView struct {
	Checkpoints [][]byte // signed notes, distinct, in the sender's order
	HeadSeqno   uint64   // the sender's own chain head as it pinned it
	Head        cid.Cid
}

// marshalLogView returns the canonical body (docs/spec/sigchain.md §1):
// {"checkpoints":["…",…],"head":{"id":"b…","seqno":N}}.
func marshalLogView(v logView) []byte {
	var b bytes.Buffer
	b.WriteString(`{"checkpoints":[`)
	for i, n := range v.Checkpoints {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(canonicalString(string(n)))
	}
	b.WriteString(`],"head":{"id":`)
	b.Write(canonicalString(v.Head.String()))
	b.WriteString(`,"seqno":`)
	b.WriteString(strconv.FormatUint(v.HeadSeqno, 10))
	b.WriteString(`}}`)
	return b.Bytes()
}

// canonicalString is s as a canonical JSON string: encoding/json's
// escaping, which is the canonical one (sigchain.md §1). s must be UTF-8.
func canonicalString(s string) []byte {
	b, _ := json.Marshal(s) // a string always encodes
	return b
}

// parseLogView parses a log-view body: exactly the canonical form
// marshalLogView writes, 0 to maxLogViewNotes distinct non-empty UTF-8
// notes of at most maxLogViewNoteSize bytes each, a head seqno of at
// least 1 (and at most 2^53-1) and a head that is a link ID. The notes
// are not verified here: that needs the logs' keys.
func parseLogView(body []byte) (logView, error) {
	bad := func(why string) (logView, error) {
		return logView{}, fmt.Errorf("%w: a log-view body %s", ErrMalformed, why)
	}
	if len(body) > maxLogViewNotes*(2*maxLogViewNoteSize+8)+256 {
		return bad("is too long")
	}
	var raw struct {
		Checkpoints []string `json:"checkpoints"`
		Head        *struct {
			ID    string `json:"id"`
			Seqno uint64 `json:"seqno"`
		} `json:"head"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return bad("is not the expected JSON")
	}
	if raw.Checkpoints == nil || raw.Head == nil {
		return bad("lacks a field")
	}
	if len(raw.Checkpoints) > maxLogViewNotes {
		return bad(fmt.Sprintf("has more than %d checkpoints", maxLogViewNotes))
	}
	v := logView{HeadSeqno: raw.Head.Seqno}
	seen := map[string]bool{}
	for _, n := range raw.Checkpoints {
		switch {
		case n == "" || len(n) > maxLogViewNoteSize:
			return bad("has a checkpoint that is empty or too long")
		case !utf8.ValidString(n):
			return bad("has a checkpoint that is not UTF-8")
		case seen[n]:
			return bad("repeats a checkpoint")
		}
		seen[n] = true
		v.Checkpoints = append(v.Checkpoints, []byte(n))
	}
	if v.HeadSeqno == 0 || v.HeadSeqno > 1<<53-1 {
		return bad("has a head seqno out of range")
	}
	head, err := sigchain.ParseID(raw.Head.ID)
	if err != nil {
		return bad("has a head that is no link ID")
	}
	v.Head = head
	if !bytes.Equal(marshalLogView(v), body) {
		return bad("is not canonical")
	}
	return v, nil
}
