package relay

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// readDelimited returns a prefix of its input, never more than one
// prefix and maxHopMessage bytes, and the whole message when it
// succeeds: the relay replays exactly those bytes.
func FuzzReadDelimited(f *testing.F) {
	f.Add([]byte{3, 8, 1, 0, 42})
	f.Add([]byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 1})
	f.Add(binary.AppendUvarint(nil, maxHopMessage+1))
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := readDelimited(bytes.NewReader(in))
		if !bytes.HasPrefix(in, got) || len(got) > binary.MaxVarintLen64+maxHopMessage {
			t.Fatalf("read %x of %x", got, in)
		}
		if err == nil {
			n, k := binary.Uvarint(got)
			if k <= 0 || uint64(len(got)-k) != n {
				t.Fatalf("message %x: length %d, prefix %d", got, n, k)
			}
		}
	})
}
