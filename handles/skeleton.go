package handles

import (
	"strings"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// SkeletonVersion numbers the rule [Skeleton] implements. Version 1 only
// dropped the separators; version 2 adds the Unicode TS #39 confusables
// and the digit and letter folds. A registry that stores skeletons
// recomputes what an older version wrote when it opens (see
// docs/spec/handles.md, "Skeletons").
const SkeletonVersion = 2

// Skeleton returns the look-alike skeleton of a local name
// (docs/spec/handles.md, "Skeletons"): two names with one skeleton
// ("bob" and "b0b", "alice" and "a1ice", "mallory" and "rnallory",
// "alice" and "al.ice") are too alike to belong to two people, and every
// registry [Store] refuses a claim of a name whose skeleton another key's
// name already has.
//
// The skeleton is computed by repeating, until the text no longer
// changes: NFD; each confusable character replaced by its prototype
// (Cyrillic а by a, full-width ａ by a, A by a); the folds 0→o, 1→l,
// i→l, 5→s, 8→b; the separators . - _ dropped; and, left to right, the
// pairs rn→m, vv→w, cl→d. Skeleton(Skeleton(x)) == Skeleton(x) for every
// text x. For a valid name the result is lower-case ASCII letters and
// digits; other text keeps the characters the rule does not map.
func Skeleton(name string) string {
	if isASCII(name) {
		return foldASCII(name) // one pass reaches the fixed point; see below
	}
	// Each round either shortens the text (a confusable becomes one ASCII
	// byte, a separator goes, a pair becomes one letter) or only brings
	// combining marks that a dropped separator had kept apart back into
	// NFD order, after which the next round changes nothing. The bound is
	// a guard that the argument makes unreachable.
	s := name
	for range 2*len(name) + 2 {
		t := foldASCII(mapConfusables(norm.NFD.String(s)))
		if t == s {
			break
		}
		s = t
	}
	return s
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// singleFold is the fold of one ASCII byte: upper case to lower case, the
// TS #39 prototypes (0 → o, 1 → l; I → l through i) and the digit and
// letter look-alikes (i → l, 5 → s, 8 → b). Zero drops the byte (the
// separators . - _); a byte without an entry stays as it is.
var singleFold = func() (t [utf8.RuneSelf]byte) {
	for c := range utf8.RuneSelf {
		t[c] = byte(c)
	}
	for c := byte('A'); c <= 'Z'; c++ {
		t[c] = c + 'a' - 'A'
	}
	for from, to := range map[byte]byte{'0': 'o', '1': 'l', 'i': 'l', 'I': 'l', '5': 's', '8': 'b'} {
		t[from] = to
	}
	t['.'], t['-'], t['_'] = 0, 0, 0
	return t
}()

// pairFold returns the letter a pair of folded bytes reads as (rn → m,
// vv → w, cl → d), or 0. No result is the first or second byte of a pair,
// so a left-to-right pass leaves no pair behind.
func pairFold(a, b byte) byte {
	switch {
	case a == 'r' && b == 'n':
		return 'm'
	case a == 'v' && b == 'v':
		return 'w'
	case a == 'c' && b == 'l':
		return 'd'
	}
	return 0
}

// foldASCII applies the single-byte folds and drops the separators, then
// folds the pairs from left to right. Bytes of other characters pass
// through. On ASCII text one pass is a fixed point: no fold makes a byte
// that another fold changes, and no pair is left (see pairFold).
func foldASCII(s string) string {
	if isFolded(s) {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < utf8.RuneSelf {
			if c = singleFold[c]; c == 0 {
				continue
			}
		}
		b = append(b, c)
	}
	w := 0
	for r := 0; r < len(b); r++ {
		if r+1 < len(b) {
			if m := pairFold(b[r], b[r+1]); m != 0 {
				b[w] = m
				w++
				r++
				continue
			}
		}
		b[w] = b[r]
		w++
	}
	return string(b[:w])
}

// isFolded reports whether foldASCII would return s unchanged, without
// allocating: the common case of a name that is its own skeleton.
func isFolded(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < utf8.RuneSelf && singleFold[c] != c {
			return false
		}
		if i+1 < len(s) && pairFold(c, s[i+1]) != 0 {
			return false
		}
	}
	return true
}

// mapConfusables replaces each character that has a prototype in
// confusableRune by it; all others, and bytes that are not UTF-8, stay.
func mapConfusables(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if p, ok := confusableRune(r); ok && n > 1 {
			b.WriteRune(p)
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// confusableRune returns the ASCII prototype of a non-ASCII character
// that is drawn like one: the homoglyphs Parse names in its refusals
// (Cyrillic, Greek, Armenian and other look-alikes, other dashes and
// dots) and the full-width forms of ASCII.
func confusableRune(r rune) (rune, bool) {
	if c, ok := homoglyphs[r]; ok {
		return rune(c), true
	}
	if r >= 0xFF01 && r <= 0xFF5E {
		return fullWidthASCII(r), true
	}
	return 0, false
}
