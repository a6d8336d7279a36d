package ui

import (
	"strings"
	"unicode/utf8"
)

// Everything the UI draws that came from someone else (handles, message
// bodies, group titles, file names) passes through clean or cleanLine
// first: a received text must never reach the terminal as a command. The
// terminal's own escape sequences start with a control character (ESC,
// CSI 0x9b, OSC 0x9d...), so dropping every C0 and C1 control character
// makes them inert text; bidirectional overrides and isolates are
// dropped too, so that a text cannot reorder what is drawn after it on
// its line (a handle that reads as another one, a message that hides its
// end).

// clean returns s safe to draw: invalid UTF-8 replaced, C0 and C1 control
// characters and DEL removed (a line break kept, a tab and a carriage
// return made a space), bidirectional controls removed, line and
// paragraph separators made line breaks.
func clean(s string) string {
	if isClean(s, true) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i, w := 0, 0; i < len(s); i += w {
		r, n := utf8.DecodeRuneInString(s[i:])
		w = n
		if r == utf8.RuneError && n <= 1 {
			b.WriteRune('\uFFFD')
			continue
		}
		switch {
		case r == '\n':
			b.WriteByte('\n')
		case r == '\t' || r == '\r':
			b.WriteByte(' ')
		case r == '\u2028' || r == '\u2029':
			b.WriteByte('\n')
		case dropped(r):
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// cleanLine is clean for what is drawn on one line (a handle, a title, a
// file name): line breaks become spaces.
func cleanLine(s string) string {
	if isClean(s, false) {
		return s
	}
	return strings.ReplaceAll(clean(s), "\n", " ")
}

// isClean reports whether s needs no change (the common case, checked
// without allocating).
func isClean(s string, multiline bool) bool {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, n := utf8.DecodeRuneInString(s[i:]); n <= 1 {
				return false
			}
		}
		if r == '\n' && multiline {
			continue
		}
		if r == '\t' || r == '\r' || r == '\n' || r == '\u2028' || r == '\u2029' || dropped(r) {
			return false
		}
	}
	return true
}

// dropped reports whether r is never drawn: a control character (C0, DEL,
// C1) or a bidirectional control (embeddings, overrides, isolates, marks).
func dropped(r rune) bool {
	switch {
	case r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f:
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
		return true
	case r == 0x200e, r == 0x200f, r == 0x061c:
		return true
	case r == 0xfeff: // a byte order mark drawn as nothing
		return true
	}
	return false
}
