package format

import (
	"bytes"
	"errors"
	"testing"
)

// TestSegmentOpener decrypts an encrypted file segment by segment, as a
// streaming fetch does, and refuses a changed segment, a segment under the
// wrong index and the wrong key.
func TestSegmentOpener(t *testing.T) {
	key := FileKey{7}
	for _, size := range []int64{0, 1, SegmentSize - 1, SegmentSize, SegmentSize + 1, 3*SegmentSize + 5} {
		plain := bytes.Repeat([]byte{0x5a}, int(size))
		var enc bytes.Buffer
		if _, err := Encrypt(&enc, bytes.NewReader(plain), key); err != nil {
			t.Fatal(err)
		}
		o, err := NewSegmentOpener(key, int64(enc.Len()))
		if err != nil {
			t.Fatal(err)
		}
		var got []byte
		for i := int64(0); i < o.NumSegments(); i++ {
			seg := bytes.Clone(enc.Bytes()[i*EncSegmentSize:][:o.SegmentLen(i)])
			pt, err := o.Open(seg, i)
			if err != nil {
				t.Fatalf("size %d segment %d: %v", size, i, err)
			}
			got = append(got, pt...)
		}
		if !bytes.Equal(got, plain) {
			t.Fatalf("size %d: decrypted %d bytes that differ", size, len(got))
		}
		seg := bytes.Clone(enc.Bytes()[:o.SegmentLen(0)])
		seg[len(seg)/2] ^= 1
		if _, err := o.Open(seg, 0); !errors.Is(err, ErrDecrypt) {
			t.Errorf("size %d: a changed segment: %v", size, err)
		}
		if o.NumSegments() > 1 {
			seg := bytes.Clone(enc.Bytes()[:o.SegmentLen(1)])
			if _, err := o.Open(seg, 1); !errors.Is(err, ErrDecrypt) {
				t.Errorf("size %d: segment 0 opened as segment 1: %v", size, err)
			}
		}
		wrong, _ := NewSegmentOpener(FileKey{8}, int64(enc.Len()))
		if _, err := wrong.Open(bytes.Clone(enc.Bytes()[:o.SegmentLen(0)]), 0); !errors.Is(err, ErrDecrypt) {
			t.Errorf("size %d: the wrong key: %v", size, err)
		}
	}
	if _, err := NewSegmentOpener(key, EncSegmentSize+SegmentOverhead); !errors.Is(err, ErrDecrypt) {
		t.Errorf("an impossible size: %v", err)
	}
}
