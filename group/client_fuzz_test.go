package group

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

// fuzzGroup is the group every FuzzReadPage input is read as.
const fuzzGroup = "friends@kez.lat"

// seedPages adds GET answers made of the vectors' links to a fuzz corpus:
// whole chains, pages of them, and broken pages.
func seedPages(f *testing.F) {
	for _, v := range readVectors(f) {
		links := v.linkBytes(f)
		if len(links) == 0 || !bytes.Contains(links[0], []byte(`"`+fuzzGroup+`"`)) {
			continue
		}
		page := func(from, to int, head []byte) []byte {
			l, err := ParseLink(head)
			if err != nil {
				return nil
			}
			return fmt.Appendf(nil, `{"links":[%s],"head":{"seqno":%d,"id":"%s"}}`, bytes.Join(links[from:to], []byte(",")), l.Seqno(), l.ID())
		}
		last := links[len(links)-1]
		if p := page(0, len(links), last); p != nil {
			f.Add(p, uint64(0))
			f.Add(page(1, len(links), last), uint64(1))
			f.Add(page(0, 1, last), uint64(0))
			if len(links) > 1 {
				f.Add(page(1, 2, last), uint64(0))
			}
		}
	}
	f.Add([]byte(`{"links":[],"head":{"seqno":0,"id":""}}`), uint64(0))
	f.Add([]byte(`{"links":[{}],"head":{"seqno":1,"id":"x"}}`), uint64(0))
	f.Add([]byte(`{"links":null}`), uint64(1<<63))
}

// FuzzReadPage checks that readPage, the client's reader of the
// sig-server's answers, never panics, refuses with ErrBadAnswer only,
// and accepts only links of the group in seqno order from since+1, none
// past the head, the last one's ID returned.
func FuzzReadPage(f *testing.F) {
	seedPages(f)
	f.Fuzz(func(t *testing.T, body []byte, since uint64) {
		links, last, hd, err := readPage(body, fuzzGroup, since)
		if err != nil {
			if !errors.Is(err, ErrBadAnswer) {
				t.Fatalf("error %v is not ErrBadAnswer", err)
			}
			return
		}
		if len(links) > MaxLinksPerResponse {
			t.Fatalf("%d links", len(links))
		}
		for i, b := range links {
			l, err := ParseLink(b)
			if err != nil {
				t.Fatalf("link %d does not parse: %v", i, err)
			}
			if l.Group() != fuzzGroup || l.Seqno() != since+uint64(i)+1 || l.Seqno() > hd.Seqno {
				t.Fatalf("link %d: seqno %d of %s, head %d", i, l.Seqno(), l.Group(), hd.Seqno)
			}
			if i == len(links)-1 && !l.ID().Equals(last) {
				t.Fatal("the last ID is not the last link's")
			}
		}
		if len(links) == 0 && last.Defined() {
			t.Fatal("an ID without links")
		}
	})
}
