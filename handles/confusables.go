package handles

import (
	"fmt"
	"unicode"
)

// Handles are ASCII only, so no Unicode normalisation is needed to
// compare them; look-alikes within ASCII ("b0b", "rnallory") are caught
// by the skeleton (skeleton.go). What this file adds is a precise reason
// for every non-ASCII character, so that a person trying a look-alike
// trick (or pasting one by accident) learns what was refused; Skeleton
// maps the same characters to their prototypes.

// homoglyphs maps non-Latin letters and signs that are drawn like an allowed
// character to that character. It names the common tricks; every other
// non-ASCII character is refused too, only with a less specific reason.
var homoglyphs = map[rune]byte{
	// Cyrillic small
	'а': 'a', 'в': 'b', 'г': 'r', 'е': 'e', 'з': '3', 'к': 'k', 'м': 'm', 'н': 'h',
	'о': 'o', 'р': 'p', 'с': 'c', 'т': 't', 'у': 'y', 'х': 'x', 'ь': 'b', 'ѕ': 's',
	'і': 'i', 'ј': 'j', 'ԁ': 'd', 'һ': 'h', 'ӏ': 'l', 'ԛ': 'q', 'ԝ': 'w', 'ё': 'e',
	'ї': 'i', 'ԍ': 'g', 'ү': 'y',
	// Cyrillic capital
	'А': 'a', 'В': 'b', 'Е': 'e', 'З': '3', 'К': 'k', 'М': 'm', 'Н': 'h', 'О': 'o',
	'Р': 'p', 'С': 'c', 'Т': 't', 'У': 'y', 'Х': 'x', 'Ѕ': 's', 'І': 'i', 'Ј': 'j',
	'Ԁ': 'd', 'Һ': 'h', 'Ӏ': 'l', 'Ԛ': 'q', 'Ԝ': 'w',
	// Greek
	'α': 'a', 'β': 'b', 'γ': 'y', 'ε': 'e', 'ι': 'i', 'κ': 'k', 'ν': 'v', 'ο': 'o',
	'ρ': 'p', 'τ': 't', 'υ': 'u', 'χ': 'x', 'ω': 'w', 'ϲ': 'c', 'ϳ': 'j',
	'Α': 'a', 'Β': 'b', 'Ε': 'e', 'Ζ': 'z', 'Η': 'h', 'Ι': 'i', 'Κ': 'k', 'Μ': 'm',
	'Ν': 'n', 'Ο': 'o', 'Ρ': 'p', 'Τ': 't', 'Υ': 'y', 'Χ': 'x', 'Ϲ': 'c',
	// Armenian
	'օ': 'o', 'ս': 'u', 'հ': 'h', 'ո': 'n', 'ց': 'g', 'զ': 'q',
	// Latin letters outside ASCII that read as ASCII ones
	'ı': 'i', 'ȷ': 'j', 'ɑ': 'a', 'ɡ': 'g', 'ℓ': 'l', 'ℹ': 'i', 'ǀ': 'l',
	'ꓲ': 'l', 'ꓳ': 'o', 'ꓴ': 'u',
	// Digits of other scripts and signs
	'٠': '.', '۰': '.', '߀': '0', '০': '0', '〇': 'o',
	'‐': '-', '‑': '-', '‒': '-', '–': '-', '—': '-', '―': '-', '−': '-', '⁃': '-',
	'․': '.', '‧': '.', '·': '.', '•': '.', '∙': '.', '⋅': '.',
	'﹫': '@', '﹘': '-', '﹣': '-', '‗': '_',
}

// classify returns the reason a non-ASCII rune is refused and a phrase
// describing it. hasASCIILetter tells whether the whole input has Latin
// letters (for mixed scripts).
func classify(r rune, hasASCIILetter bool) (Reason, string) {
	switch {
	case isInvisible(r):
		return ReasonInvisible, "an invisible or formatting character (zero-width, bidi control, soft hyphen, non-ASCII space or filler)"
	case r >= 0xFF01 && r <= 0xFF5E || r == 0x3000:
		return ReasonFullWidth, fmt.Sprintf("a full-width form of %q; type the ordinary ASCII character", fullWidthASCII(r))
	case r >= 0xFF61 && r <= 0xFFEF:
		return ReasonFullWidth, "a half-width form; handles use ASCII only"
	}
	if c, ok := homoglyphs[r]; ok {
		return ReasonHomoglyph, fmt.Sprintf("a %s character that looks like %q; handles use ASCII only", scriptOf(r), c)
	}
	if r >= 0x1D400 && r <= 0x1D7FF || r >= 0x2100 && r <= 0x214F || r >= 0x2460 && r <= 0x24FF {
		return ReasonHomoglyph, "a styled letter or digit (mathematical, letter-like or enclosed); handles use ASCII only"
	}
	if unicode.IsLetter(r) && hasASCIILetter && !unicode.Is(unicode.Latin, r) {
		return ReasonMixedScript, fmt.Sprintf("a %s letter mixed with Latin letters; handles use ASCII only", scriptOf(r))
	}
	if unicode.Is(unicode.Mn, r) || unicode.Is(unicode.Me, r) {
		return ReasonNonASCII, "a combining mark; handles use ASCII only (write e, not é)"
	}
	return ReasonNonASCII, fmt.Sprintf("a %s character; handles use only a-z, 0-9 and . - _", scriptOf(r))
}

// isInvisible reports characters that render as nothing or as blank space.
func isInvisible(r rune) bool {
	switch {
	case unicode.Is(unicode.Cf, r), // soft hyphen, zero-width, bidi controls, BOM, tags
		unicode.Is(unicode.Cc, r), // C1 controls
		unicode.Is(unicode.Zs, r), // non-ASCII spaces (NBSP, en space, ideographic space is full-width)
		r == 0x2028, r == 0x2029,  // line and paragraph separators
		r == 0x034F,                                        // combining grapheme joiner
		r >= 0xFE00 && r <= 0xFE0F,                         // variation selectors
		r >= 0xE0100 && r <= 0xE01EF,                       // variation selectors supplement
		r == 0x115F, r == 0x1160, r == 0x3164, r == 0xFFA0, // Hangul fillers
		r == 0x2800,                // braille blank
		r >= 0x180B && r <= 0x180F: // Mongolian free variation selectors and vowel separator
		return r != 0x3000
	}
	return false
}

func fullWidthASCII(r rune) rune {
	if r == 0x3000 {
		return ' '
	}
	return r - 0xFF01 + '!'
}

// scriptOf names the script of r for messages.
func scriptOf(r rune) string {
	for _, s := range []struct {
		name  string
		table *unicode.RangeTable
	}{
		{"Cyrillic", unicode.Cyrillic}, {"Greek", unicode.Greek}, {"Armenian", unicode.Armenian},
		{"Latin", unicode.Latin}, {"Arabic", unicode.Arabic}, {"Hebrew", unicode.Hebrew},
		{"Han", unicode.Han}, {"Hiragana", unicode.Hiragana}, {"Katakana", unicode.Katakana},
		{"Hangul", unicode.Hangul}, {"Devanagari", unicode.Devanagari}, {"Bengali", unicode.Bengali},
		{"Thai", unicode.Thai}, {"Lisu", unicode.Lisu}, {"NKo", unicode.Nko},
	} {
		if unicode.Is(s.table, r) {
			return s.name
		}
	}
	switch {
	case unicode.IsDigit(r):
		return "non-ASCII digit"
	case unicode.IsPunct(r) || unicode.IsSymbol(r):
		return "punctuation or symbol"
	}
	return "non-ASCII"
}
