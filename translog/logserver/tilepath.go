package logserver

import (
	"errors"
	"strings"
)

// tileWidth is the width of a full tile or entry bundle (C2SP tlog-tiles).
const tileWidth = 256

// maxTileLevel is the highest tile level the C2SP tlog-tiles paths name.
const maxTileLevel = 63

// maxIndexGroups bounds the digit groups of an index: 2^64 has 20 digits.
const maxIndexGroups = 7

// errTilePath reports a path that is not a C2SP tlog-tiles path.
var errTilePath = errors.New("logserver: not a tile path")

// tilePath is a parsed tile or entry bundle path: tile Level/Index of
// tile space, or, with Entries, the entry bundle Index. Width is the
// width of a partial tile (1 to 255), 0 for a full one.
type tilePath struct {
	Entries bool
	Level   uint64
	Index   uint64
	Width   uint8
}

// parseTilePath parses the part of a tile URL after ".../tile/", by the
// C2SP tlog-tiles grammar and only its one canonical form:
//
//	<L>/<N>[.p/<W>]         a hash tile: L a level 0 to 63 without leading zeros
//	entries/<N>[.p/<W>]     an entry bundle
//
// where N is the index in groups of three digits, all but the last
// prefixed with "x", without a leading group of zeros ("x001/x234/067" is
// 1234067; "000" is 0), and W is the width of a partial tile, 1 to 255
// without leading zeros. Anything else is errTilePath.
func parseTilePath(s string) (tilePath, error) {
	var p tilePath
	head, rest, ok := strings.Cut(s, "/")
	if !ok {
		return p, errTilePath
	}
	if head == "entries" {
		p.Entries = true
	} else {
		l, ok := decimal(head, maxTileLevel)
		if !ok {
			return p, errTilePath
		}
		p.Level = l
	}
	if n, w, ok := strings.Cut(rest, ".p/"); ok {
		width, ok := decimal(w, tileWidth-1)
		if !ok || width == 0 {
			return p, errTilePath
		}
		p.Width, rest = uint8(width), n
	}
	groups := strings.Split(rest, "/")
	if len(groups) > maxIndexGroups {
		return p, errTilePath
	}
	var n uint64
	for i, g := range groups {
		last := i == len(groups)-1
		if !last {
			if g, ok = strings.CutPrefix(g, "x"); !ok {
				return p, errTilePath
			}
		}
		if len(g) != 3 || g[0] < '0' || g[0] > '9' || g[1] < '0' || g[1] > '9' || g[2] < '0' || g[2] > '9' {
			return p, errTilePath
		}
		if i == 0 && !last && g == "000" {
			return p, errTilePath // a leading group of zeros: not canonical
		}
		d := uint64(g[0]-'0')*100 + uint64(g[1]-'0')*10 + uint64(g[2]-'0')
		if n > (^uint64(0)-d)/1000 {
			return p, errTilePath
		}
		n = n*1000 + d
	}
	p.Index = n
	return p, nil
}

// decimal parses a decimal number of at most max without sign or leading
// zeros.
func decimal(s string, max uint64) (uint64, bool) {
	if s == "" || len(s) > 20 || len(s) > 1 && s[0] == '0' {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
		if n > max {
			return 0, false
		}
	}
	return n, true
}

// String formats p as parseTilePath reads it.
func (p tilePath) String() string {
	var b strings.Builder
	if p.Entries {
		b.WriteString("entries/")
	} else {
		b.WriteString(itoa(p.Level))
		b.WriteByte('/')
	}
	var groups []string
	n := p.Index
	for {
		g := itoa(1000 + n%1000)[1:]
		groups = append(groups, g)
		if n /= 1000; n == 0 {
			break
		}
	}
	for i := len(groups) - 1; i >= 0; i-- {
		if i > 0 {
			b.WriteByte('x')
		}
		b.WriteString(groups[i])
		if i > 0 {
			b.WriteByte('/')
		}
	}
	if p.Width > 0 {
		b.WriteString(".p/")
		b.WriteString(itoa(uint64(p.Width)))
	}
	return b.String()
}

func itoa(n uint64) string {
	var buf [20]byte
	i := len(buf)
	for {
		i--
		buf[i] = byte('0' + n%10)
		if n /= 10; n == 0 {
			break
		}
	}
	return string(buf[i:])
}

// within reports whether a tree of size leaves has every node the tile
// or bundle p holds: its width (256 for a full one) of nodes at its level.
func (p tilePath) within(size uint64) bool {
	nodes := size // the nodes of tile level L are the subtrees of 256^L leaves
	if !p.Entries {
		nodes = size >> (8 * p.Level) // 0 from level 8 on
	}
	w := uint64(p.Width)
	if w == 0 {
		w = tileWidth
	}
	return p.Index <= nodes/tileWidth && p.Index*tileWidth+w <= nodes
}
