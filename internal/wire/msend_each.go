package wire

import (
	"encoding/binary"
	"fmt"

	"github.com/kez-lat/kez-chat/kez"
)

// MultiPayloadMagic starts the body of a multi-recipient send that carries
// its own payload for each recipient (a pairwise-sealed message to each
// member device, docs/spec/chat.md §1), on the same subject as a
// [MultiSendMagic] body.
const MultiPayloadMagic = "KZMP"

// MultiCopyOverhead is what one recipient adds to a [MultiPayloadMagic]
// body besides its payload: its 32-byte key and the payload's 4-byte
// length.
const MultiCopyOverhead = 32 + 4

// MultiCopy is one recipient device of a multi-recipient send with a
// payload per recipient, and its payload.
type MultiCopy struct {
	Device  kez.PublicKey
	Payload []byte
}

// MultiPayloadBodySize returns the size of the body
// [EncodeMultiPayload] makes of copies.
func MultiPayloadBodySize(copies []MultiCopy) int {
	n := MultiHeaderSize
	for _, c := range copies {
		n += MultiCopyOverhead + len(c.Payload)
	}
	return n
}

// EncodeMultiPayload returns the body of a multi-recipient send with a
// payload per recipient: "KZMP", the count n as a big-endian uint16 (1 to
// [MaxMultiRecipients]), then for each copy its 32-byte device key, the
// payload's length as a big-endian uint32 and the payload. The devices
// must be distinct.
func EncodeMultiPayload(copies []MultiCopy) ([]byte, error) {
	if len(copies) == 0 || len(copies) > MaxMultiRecipients {
		return nil, fmt.Errorf("%w: %d recipients, want 1 to %d", ErrMultiSend, len(copies), MaxMultiRecipients)
	}
	seen := make(map[kez.PublicKey]struct{}, len(copies))
	b := make([]byte, 0, MultiPayloadBodySize(copies))
	b = append(b, MultiPayloadMagic...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(copies)))
	for _, c := range copies {
		if _, dup := seen[c.Device]; dup {
			return nil, fmt.Errorf("%w: recipient %s listed twice", ErrMultiSend, c.Device)
		}
		if uint64(len(c.Payload)) > 1<<32-1 {
			return nil, fmt.Errorf("%w: a payload of %d bytes", ErrMultiSend, len(c.Payload))
		}
		seen[c.Device] = struct{}{}
		b = append(b, c.Device[:]...)
		b = binary.BigEndian.AppendUint32(b, uint32(len(c.Payload)))
		b = append(b, c.Payload...)
	}
	return b, nil
}

// ParseMultiPayload splits the body of a multi-recipient send with a
// payload per recipient, from sender, into its copies. It refuses a body
// without the magic, a count of 0 or over [MaxMultiRecipients], a copy
// that runs past the body's end, bytes after the last copy, a device
// listed twice and the sender's own key. A payload may be empty; the
// payloads alias b. Errors wrap [ErrMultiSend].
func ParseMultiPayload(b []byte, sender kez.PublicKey) ([]MultiCopy, error) {
	if len(b) < MultiHeaderSize || string(b[:len(MultiPayloadMagic)]) != MultiPayloadMagic {
		return nil, fmt.Errorf("%w: no %s header", ErrMultiSend, MultiPayloadMagic)
	}
	n := int(binary.BigEndian.Uint16(b[len(MultiPayloadMagic):]))
	if n == 0 || n > MaxMultiRecipients {
		return nil, fmt.Errorf("%w: %d recipients, want 1 to %d", ErrMultiSend, n, MaxMultiRecipients)
	}
	rest := b[MultiHeaderSize:]
	if len(rest) < MultiCopyOverhead*n {
		return nil, fmt.Errorf("%w: %d recipients need at least %d bytes, the body has %d", ErrMultiSend, n, MultiCopyOverhead*n, len(rest))
	}
	copies := make([]MultiCopy, n)
	seen := make(map[kez.PublicKey]struct{}, n)
	for i := range copies {
		if len(rest) < MultiCopyOverhead {
			return nil, fmt.Errorf("%w: copy %d is truncated", ErrMultiSend, i)
		}
		c := &copies[i]
		copy(c.Device[:], rest)
		size := uint64(binary.BigEndian.Uint32(rest[32:]))
		rest = rest[MultiCopyOverhead:]
		if size > uint64(len(rest)) {
			return nil, fmt.Errorf("%w: copy %d has %d bytes of payload, %d are left", ErrMultiSend, i, size, len(rest))
		}
		if c.Device == sender {
			return nil, fmt.Errorf("%w: the sender is among the recipients", ErrMultiSend)
		}
		if _, dup := seen[c.Device]; dup {
			return nil, fmt.Errorf("%w: recipient %d listed twice", ErrMultiSend, i)
		}
		seen[c.Device] = struct{}{}
		c.Payload = rest[:size:size]
		rest = rest[size:]
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the last copy", ErrMultiSend, len(rest))
	}
	return copies, nil
}

// SplitMultiPayload splits copies, in order, into the fewest runs that
// each make a body of at most [MaxMultiRecipients] copies and maxBody
// bytes (a connection's maximum payload, less room for the headers),
// each run as long as it may be. A copy too large for maxBody on its own
// is a run of its own (its publish fails).
func SplitMultiPayload(copies []MultiCopy, maxBody int) [][]MultiCopy {
	var runs [][]MultiCopy
	start, size := 0, MultiHeaderSize
	for i, c := range copies {
		n := MultiCopyOverhead + len(c.Payload)
		if i > start && (i-start == MaxMultiRecipients || size+n > maxBody) {
			runs = append(runs, copies[start:i:i])
			start, size = i, MultiHeaderSize
		}
		size += n
	}
	if start < len(copies) {
		runs = append(runs, copies[start:])
	}
	return runs
}
