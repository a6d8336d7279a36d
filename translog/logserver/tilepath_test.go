package logserver

import (
	"strings"
	"testing"
)

func TestParseTilePath(t *testing.T) {
	for _, c := range []struct {
		in   string
		want tilePath
	}{
		{"0/000", tilePath{}},
		{"0/001", tilePath{Index: 1}},
		{"1/x001/x234/067", tilePath{Level: 1, Index: 1234067}},
		{"63/999", tilePath{Level: 63, Index: 999}},
		{"0/x001/000.p/255", tilePath{Index: 1000, Width: 255}},
		{"entries/000.p/1", tilePath{Entries: true, Width: 1}},
		{"entries/x018/x446/x744/x073/x709/x551/615", tilePath{Entries: true, Index: ^uint64(0)}},
	} {
		got, err := parseTilePath(c.in)
		if err != nil || got != c.want {
			t.Errorf("parseTilePath(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
			continue
		}
		if got.String() != c.in {
			t.Errorf("%+v.String() = %q, want %q", got, got.String(), c.in)
		}
	}
}

// Every path outside the grammar's one canonical form is refused: no
// traversal, no encodings, no absurd numbers, no partial widths of 0 or
// past 255, no levels past 63.
func TestParseTilePathAbuse(t *testing.T) {
	for _, in := range []string{
		"", "0", "0/", "/0/000", "0//000", "0/000/", "../index.db", "0/../../index.db", "0/../000",
		"entries/../../index.db", "%2e%2e/000", "0/%30%30%30", "0/000%2fx", "entries/..%2f..%2findex.db",
		"checkpoint", ".state/treeState", "0/00", "0/0000", "0/1", "0/x000/001", "0/x1/000", "0/001/x002",
		"0/x001", "0/X001/000", "00/000", "01/000", "+1/000", "-1/000", "64/000", "18446744073709551616/000",
		"0/000.p/0", "0/000.p/00", "0/000.p/01", "0/000.p/256", "0/000.p/", "0/000.p", "0/000.p/1/", "0/000.p/-1",
		"0/000.p/1.p/2", "entries/000.p/300", "entry/000", "ENTRIES/000",
		"0/x018/x446/x744/x073/x709/x551/616", // 2^64
		"0/x001/x001/x001/x001/x001/x001/x001/001",
		"0/ 000", "0/000 ", "0/000\x00", "0/٠٠٠",
	} {
		if p, err := parseTilePath(in); err == nil {
			t.Errorf("parseTilePath(%q) = %+v, want an error", in, p)
		}
	}
}

func TestTileWithin(t *testing.T) {
	for _, c := range []struct {
		p    tilePath
		size uint64
		want bool
	}{
		{tilePath{Width: 5}, 5, true},
		{tilePath{Width: 5}, 4, false},
		{tilePath{Width: 5}, 300, true},
		{tilePath{}, 255, false},
		{tilePath{}, 256, true},
		{tilePath{Index: 1, Width: 1}, 256, false},
		{tilePath{Index: 1, Width: 1}, 257, true},
		{tilePath{Level: 1, Width: 1}, 255, false},
		{tilePath{Level: 1, Width: 1}, 256, true},
		{tilePath{Level: 1}, 65535, false},
		{tilePath{Level: 1}, 65536, true},
		{tilePath{Level: 8, Width: 1}, ^uint64(0), false},
		{tilePath{Level: 63, Width: 1}, ^uint64(0), false},
		{tilePath{Entries: true, Width: 3}, 3, true},
		{tilePath{Entries: true, Index: ^uint64(0)}, ^uint64(0), false},
		{tilePath{Entries: true, Index: ^uint64(0) / 256, Width: 255}, ^uint64(0), true},
	} {
		if got := c.p.within(c.size); got != c.want {
			t.Errorf("%+v.within(%d) = %v, want %v", c.p, c.size, got, c.want)
		}
	}
}

// FuzzTilePath: whatever parses is canonical (it prints back as the
// input), names a level of at most 63 and a partial width below 256, and
// within never panics.
func FuzzTilePath(f *testing.F) {
	for _, s := range []string{
		"0/000", "1/x001/x234/067", "entries/000.p/1", "0/x001/000.p/255", "63/999",
		"../index.db", "0/000.p/0", "0/x000/001", "entries/x018/x446/x744/x073/x709/x551/615",
	} {
		f.Add(s, uint64(300))
	}
	f.Fuzz(func(t *testing.T, s string, size uint64) {
		p, err := parseTilePath(s)
		if err != nil {
			return
		}
		if p.String() != s {
			t.Fatalf("parseTilePath(%q) = %+v, which prints as %q", s, p, p.String())
		}
		if p.Level > maxTileLevel || strings.Contains(s, "..") {
			t.Fatalf("parseTilePath(%q) = %+v", s, p)
		}
		p.within(size)
	})
}
