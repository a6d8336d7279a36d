package chat

import (
	"bytes"
	"encoding/hex"
	"fmt"
)

// Receipt statuses. A receiver acts on the ones it knows and ignores others.
const (
	// ReceiptDelivered: the recipient's client stored the messages.
	ReceiptDelivered = "delivered"
	// ReceiptRead: the recipient was shown the messages ([Client.MarkRead]
	// sends it to contacts; it counts as delivered too).
	ReceiptRead = "read"
)

// MaxReceiptIDs bounds the messages one receipt acknowledges (the envelope's
// Ref included).
const MaxReceiptIDs = 256

// maxStatusLen bounds a receipt status word.
const maxStatusLen = 16

// Receipt is what a message of kind [KindReceipt] says: that the messages
// IDs (the envelope's Ref first) reached their recipient. Its body format is
// docs/spec/chat.md §4: empty (status delivered, Ref only), or the status
// word followed by one line per further message ID.
type Receipt struct {
	Status string      // ReceiptDelivered, ReceiptRead, or a status this version does not know
	IDs    []MessageID // 1 to MaxReceiptIDs distinct non-zero IDs; IDs[0] is the envelope's Ref
}

// marshalBody returns the receipt's body, the canonical form: empty for a
// delivered receipt of one message.
func (r Receipt) marshalBody() ([]byte, error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	if r.Status == ReceiptDelivered && len(r.IDs) == 1 {
		return []byte{}, nil
	}
	b := make([]byte, 0, len(r.Status)+33*(len(r.IDs)-1))
	b = append(b, r.Status...)
	for _, id := range r.IDs[1:] {
		b = append(b, '\n')
		b = hex.AppendEncode(b, id[:])
	}
	return b, nil
}

// message returns the receipt as a message to seal.
func (r Receipt) message() (Message, error) {
	body, err := r.marshalBody()
	if err != nil {
		return Message{}, err
	}
	return Message{Kind: KindReceipt, Ref: r.IDs[0], Body: body}, nil
}

func (r Receipt) check() error {
	if err := checkStatus(r.Status); err != nil {
		return err
	}
	if len(r.IDs) == 0 || len(r.IDs) > MaxReceiptIDs {
		return fmt.Errorf("%w: a receipt acknowledges 1 to %d messages, not %d", ErrMalformed, MaxReceiptIDs, len(r.IDs))
	}
	seen := make(map[MessageID]struct{}, len(r.IDs))
	for _, id := range r.IDs {
		if id.IsZero() {
			return fmt.Errorf("%w: a receipt names the zero message ID", ErrMalformed)
		}
		if _, dup := seen[id]; dup {
			return fmt.Errorf("%w: a receipt names message %s twice", ErrMalformed, id)
		}
		seen[id] = struct{}{}
	}
	return nil
}

func checkStatus(s string) error {
	if len(s) == 0 || len(s) > maxStatusLen {
		return fmt.Errorf("%w: a receipt status is 1 to %d lower-case letters, got %d bytes", ErrMalformed, maxStatusLen, len(s))
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 'a' || s[i] > 'z' {
			return fmt.Errorf("%w: a receipt status is lower-case letters only, got %q", ErrMalformed, s)
		}
	}
	return nil
}

// ParseReceipt reads the receipt carried by m, a message of kind
// [KindReceipt] as returned by [Opener.Open]. Errors wrap [ErrMalformed].
func ParseReceipt(m *Message) (Receipt, error) {
	if m.Kind != KindReceipt {
		return Receipt{}, fmt.Errorf("%w: kind %q is not a receipt", ErrMalformed, m.Kind)
	}
	return parseReceiptBody(m.Ref, m.Body)
}

// maxReceiptBody is the longest valid body: a status word and 255 lines.
const maxReceiptBody = maxStatusLen + (MaxReceiptIDs-1)*(1+2*idLen)

// parseReceiptBody parses a receipt body for the envelope reference ref.
// It accepts only the canonical form, so every receipt has one encoding.
func parseReceiptBody(ref MessageID, body []byte) (Receipt, error) {
	if ref.IsZero() {
		return Receipt{}, fmt.Errorf("%w: a receipt must refer to a message ID", ErrMalformed)
	}
	if len(body) == 0 {
		return Receipt{Status: ReceiptDelivered, IDs: []MessageID{ref}}, nil
	}
	if len(body) > maxReceiptBody {
		return Receipt{}, fmt.Errorf("%w: a receipt body is at most %d bytes, got %d", ErrMalformed, maxReceiptBody, len(body))
	}
	lines := bytes.Split(body, []byte{'\n'})
	r := Receipt{Status: string(lines[0]), IDs: make([]MessageID, 0, len(lines))}
	r.IDs = append(r.IDs, ref)
	for i, l := range lines[1:] {
		if len(l) != 2*idLen {
			return Receipt{}, fmt.Errorf("%w: receipt line %d is not a %d-character message ID", ErrMalformed, i+2, 2*idLen)
		}
		var id MessageID
		for _, c := range l {
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return Receipt{}, fmt.Errorf("%w: receipt line %d is not lower-case hex", ErrMalformed, i+2)
			}
		}
		hex.Decode(id[:], l) // checked above
		r.IDs = append(r.IDs, id)
	}
	if err := r.check(); err != nil {
		return Receipt{}, err
	}
	if r.Status == ReceiptDelivered && len(r.IDs) == 1 {
		return Receipt{}, fmt.Errorf("%w: a delivered receipt of one message has an empty body", ErrMalformed)
	}
	return r, nil
}
