package ui

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCleanDropsControls(t *testing.T) {
	for in, want := range map[string]string{
		"hello":                        "hello",
		"two\nlines":                   "two\nlines",
		"\x1b[2J\x1b]0;pwned\x07title": "[2J]0;pwnedtitle",
		"csi\u009b31mred":              "csi31mred",
		"tab\there\r":                  "tab here ",
		"evil\u202egnp.exe":            "evilgnp.exe",
		"iso\u2066late\u2069d":         "isolated",
		"bad\xffutf8":                  "bad\uFFFDutf8",
		"sep\u2028ara\u2029tors":       "sep\nara\ntors",
		"emoji 👩‍👩‍👧 keeps its joiners": "emoji 👩‍👩‍👧 keeps its joiners",
	} {
		if got := clean(in); got != want {
			t.Errorf("clean(%q) = %q, want %q", in, got, want)
		}
	}
	if got := cleanLine("a\nb\x1b[1m"); got != "a b[1m" {
		t.Errorf("cleanLine = %q", got)
	}
}

// FuzzClean: whatever the bytes, the result is valid UTF-8 with no
// control character but the line break (none at all from cleanLine), no
// bidirectional control, and cleaning it again changes nothing.
func FuzzClean(f *testing.F) {
	for _, s := range []string{"", "hi", "\x1b[31mred\x1b[0m", "\x9b2J", "a\u202eb", "\xff\xfe", "l1\nl2\r\n", "\u2066x\u2069", "\x1bP+q\x1b\\"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, multi := range []bool{true, false} {
			out := cleanLine(s)
			if multi {
				out = clean(s)
			}
			if !utf8.ValidString(out) {
				t.Fatalf("%q: invalid UTF-8 out %q", s, out)
			}
			for _, r := range out {
				if dropped(r) && !(multi && r == '\n') {
					t.Fatalf("%q: %U left in %q", s, r, out)
				}
			}
			if !multi && strings.ContainsRune(out, '\n') {
				t.Fatalf("%q: cleanLine left a line break", s)
			}
			again := cleanLine(out)
			if multi {
				again = clean(out)
			}
			if again != out {
				t.Fatalf("%q: not idempotent: %q then %q", s, out, again)
			}
		}
	})
}
