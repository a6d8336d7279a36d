package wire

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/nats.go/jetstream"
)

// MultiSendSubjectPrefix + sender is where a user sends one payload to
// many inboxes: a request the gate checks and stores once per recipient
// device, answered with one [MultiAnswer] (docs/spec/chat.md §1).
const MultiSendSubjectPrefix = "kez.v1.msend."

// MultiSendMagic starts the body of a multi-recipient send.
const MultiSendMagic = "KZMS"

// MaxMultiRecipients bounds the recipient devices of one multi-recipient
// send. A client with more splits them over several sends.
const MaxMultiRecipients = 1024

// MultiHeaderSize is the fixed part of a multi-recipient send body, of
// either form: the magic and the count.
const MultiHeaderSize = len(MultiSendMagic) + 2

// ErrMultiSend reports a multi-recipient send body, or its answer, that
// does not follow the format.
var ErrMultiSend = errors.New("wire: malformed multi-recipient send")

// EncodeMultiSend returns the body of a multi-recipient send of payload to
// devices: "KZMS", the count n as a big-endian uint16 (1 to
// [MaxMultiRecipients]), the n 32-byte device keys, then payload. The keys
// must be distinct.
func EncodeMultiSend(devices []kez.PublicKey, payload []byte) ([]byte, error) {
	if len(devices) == 0 || len(devices) > MaxMultiRecipients {
		return nil, fmt.Errorf("%w: %d recipients, want 1 to %d", ErrMultiSend, len(devices), MaxMultiRecipients)
	}
	seen := make(map[kez.PublicKey]struct{}, len(devices))
	b := make([]byte, 0, MultiHeaderSize+32*len(devices)+len(payload))
	b = append(b, MultiSendMagic...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(devices)))
	for _, d := range devices {
		if _, dup := seen[d]; dup {
			return nil, fmt.Errorf("%w: recipient %s listed twice", ErrMultiSend, d)
		}
		seen[d] = struct{}{}
		b = append(b, d[:]...)
	}
	return append(b, payload...), nil
}

// ParseMultiSend splits the body of a multi-recipient send from sender
// into its recipient devices and the payload. It refuses a body without
// the magic, a count of 0 or over [MaxMultiRecipients], a body shorter
// than its keys, a key listed twice and the sender's own key (its other
// devices are recipients like any). The payload may be empty; it aliases
// b. Errors wrap [ErrMultiSend].
func ParseMultiSend(b []byte, sender kez.PublicKey) ([]kez.PublicKey, []byte, error) {
	if len(b) < MultiHeaderSize || string(b[:len(MultiSendMagic)]) != MultiSendMagic {
		return nil, nil, fmt.Errorf("%w: no %s header", ErrMultiSend, MultiSendMagic)
	}
	n := int(binary.BigEndian.Uint16(b[len(MultiSendMagic):]))
	if n == 0 || n > MaxMultiRecipients {
		return nil, nil, fmt.Errorf("%w: %d recipients, want 1 to %d", ErrMultiSend, n, MaxMultiRecipients)
	}
	keys := b[MultiHeaderSize:]
	if len(keys) < 32*n {
		return nil, nil, fmt.Errorf("%w: %d recipients need %d bytes of keys, the body has %d", ErrMultiSend, n, 32*n, len(keys))
	}
	devices := make([]kez.PublicKey, n)
	seen := make(map[kez.PublicKey]struct{}, n)
	for i := range devices {
		copy(devices[i][:], keys[32*i:])
		if devices[i] == sender {
			return nil, nil, fmt.Errorf("%w: the sender is among the recipients", ErrMultiSend)
		}
		if _, dup := seen[devices[i]]; dup {
			return nil, nil, fmt.Errorf("%w: recipient %d listed twice", ErrMultiSend, i)
		}
		seen[devices[i]] = struct{}{}
	}
	return devices, keys[32*n:], nil
}

// MultiAnswer is the gate's answer to a multi-recipient send once every
// copy is settled: Stored copies were stored now, Duplicates were stored
// already (the same Nats-Msg-Id for that recipient within the stream's
// duplicate window), Refused were not stored. Each recipient device is
// counted exactly once.
type MultiAnswer struct {
	Stored     int            `json:"stored"`
	Duplicates int            `json:"duplicates"`
	Refused    []MultiRefusal `json:"refused,omitempty"`
}

// MultiRefusal is one recipient device the gate stored nothing for, and
// why: one of the ErrCode constants, as a one-to-one send to it would have
// been refused.
type MultiRefusal struct {
	Device kez.PublicKey `json:"device"`
	Code   int           `json:"code"`
}

// MaxMultiAnswer bounds the answer to a multi-recipient send a client
// reads: enough for every device of [MaxMultiRecipients] refused.
const MaxMultiAnswer = 128 << 10

// ParseMultiAnswer decodes the gate's answer to a multi-recipient send to
// devices. A refusal of the whole send, in the JetStream API error shape,
// comes back as a *jetstream.APIError (as a one-to-one send's refusal
// does). An answer is accepted only if it accounts for each device once:
// Stored + Duplicates + len(Refused) = len(devices), every refused
// device one of devices, none twice, each with a code. Unknown fields are
// ignored (fields may be added). Other errors wrap [ErrMultiSend].
func ParseMultiAnswer(b []byte, devices []kez.PublicKey) (MultiAnswer, error) {
	if len(b) > MaxMultiAnswer {
		return MultiAnswer{}, fmt.Errorf("%w: answer of %d bytes", ErrMultiSend, len(b))
	}
	var r struct {
		MultiAnswer
		Error *jetstream.APIError `json:"error"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&r); err != nil {
		return MultiAnswer{}, fmt.Errorf("%w: answer: %w", ErrMultiSend, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return MultiAnswer{}, fmt.Errorf("%w: data after the answer", ErrMultiSend)
	}
	if r.Error != nil {
		if r.Error.ErrorCode == 0 {
			return MultiAnswer{}, fmt.Errorf("%w: an error answer without a code", ErrMultiSend)
		}
		return MultiAnswer{}, r.Error
	}
	a := r.MultiAnswer
	if a.Stored < 0 || a.Duplicates < 0 || a.Stored > len(devices) || a.Duplicates > len(devices) ||
		a.Stored+a.Duplicates+len(a.Refused) != len(devices) {
		return MultiAnswer{}, fmt.Errorf("%w: the answer counts %d stored, %d duplicates and %d refused for %d devices",
			ErrMultiSend, a.Stored, a.Duplicates, len(a.Refused), len(devices))
	}
	sent := make(map[kez.PublicKey]bool, len(devices))
	for _, d := range devices {
		sent[d] = false
	}
	for _, f := range a.Refused {
		seen, ok := sent[f.Device]
		switch {
		case !ok:
			return MultiAnswer{}, fmt.Errorf("%w: the answer refuses %s, which was not sent to", ErrMultiSend, f.Device)
		case seen:
			return MultiAnswer{}, fmt.Errorf("%w: the answer refuses %s twice", ErrMultiSend, f.Device)
		case f.Code <= 0:
			return MultiAnswer{}, fmt.Errorf("%w: the answer refuses %s without a code", ErrMultiSend, f.Device)
		}
		sent[f.Device] = true
	}
	return a, nil
}
