package kez

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// countingWords is the mnemonic of entropy 0x00..0x1f (a spec vector).
const countingWords = "abandon amount liar amount expire adjust cage candy arch gather drum bullet absurd math era live bid rhythm alien crouch range attend journey unaware"

func TestMnemonicKnownBIP39Vectors(t *testing.T) {
	// From the BIP-39 reference test vectors (256-bit entropy).
	for _, c := range []struct {
		entropy byte
		words   string
	}{
		{0x00, strings.Repeat("abandon ", 23) + "art"},
		{0x7f, "legal winner thank year wave sausage worth useful legal winner thank year wave sausage worth useful legal winner thank year wave sausage worth title"},
		{0x80, "letter advice cage absurd amount doctor acoustic avoid letter advice cage absurd amount doctor acoustic avoid letter advice cage absurd amount doctor acoustic bless"},
		{0xff, strings.Repeat("zoo ", 23) + "vote"},
	} {
		e := make([]byte, 32)
		for i := range e {
			e[i] = c.entropy
		}
		m, err := MnemonicFromEntropy(e)
		if err != nil {
			t.Fatal(err)
		}
		if m.Phrase() != c.words {
			t.Errorf("entropy %02x…: got %q, want %q", c.entropy, m.Phrase(), c.words)
		}
		if _, err := ParseMnemonic(c.words); err != nil {
			t.Errorf("ParseMnemonic(%q): %v", c.words, err)
		}
	}
	if _, err := MnemonicFromEntropy(make([]byte, 16)); err == nil {
		t.Error("MnemonicFromEntropy accepted 16 bytes; KEZ backups are 24 words")
	}
}

func TestParseMnemonicWordCount(t *testing.T) {
	w := strings.Fields(countingWords)
	for _, n := range []int{0, 1, 12, 23, 25, 48} {
		var text string
		if n <= 24 {
			text = strings.Join(w[:n], " ")
		} else {
			text = strings.Join(append(append([]string{}, w...), w[:n-24]...), " ")
		}
		_, err := ParseMnemonic(text)
		var e *WordCountError
		if !errors.As(err, &e) || e.Got != n {
			t.Errorf("%d words: got %v, want WordCountError{%d}", n, err, n)
			continue
		}
		if !strings.Contains(err.Error(), "24 words") {
			t.Errorf("message %q does not say how many words are needed", err)
		}
	}
}

func TestParseMnemonicMisspelt(t *testing.T) {
	w := strings.Fields(countingWords)
	for _, c := range []struct {
		pos     int // 1-based
		typo    string
		suggest string
	}{
		{1, "abandn", "abandon"},
		{3, "lair", "liar"},  // transposition
		{7, "cagee", "cage"}, // extra letter
		{13, "absurdd", "absurd"},
		{24, "unawar", "unaware"},
		{10, "gathre", "gather"},
	} {
		bad := slices.Clone(w)
		bad[c.pos-1] = c.typo
		_, err := ParseMnemonic(strings.Join(bad, " "))
		var e *WordError
		if !errors.As(err, &e) {
			t.Errorf("%s at %d: got %v, want WordError", c.typo, c.pos, err)
			continue
		}
		if e.Position != c.pos || e.Word != c.typo {
			t.Errorf("%s: WordError{%d, %q}, want position %d", c.typo, e.Position, e.Word, c.pos)
		}
		if len(e.Suggestions) == 0 || e.Suggestions[0] != c.suggest {
			t.Errorf("%s: suggestions %q, want %q first", c.typo, e.Suggestions, c.suggest)
		}
		msg := err.Error()
		if !strings.Contains(msg, "word "+itoa(uint32(c.pos))) || !strings.Contains(msg, c.suggest) {
			t.Errorf("message %q should name the position and the suggestion", msg)
		}
	}
	// A word far from any: named, with no suggestion.
	bad := slices.Clone(w)
	bad[5] = "xylophonezzz"
	_, err := ParseMnemonic(strings.Join(bad, " "))
	var e *WordError
	if !errors.As(err, &e) || e.Position != 6 || len(e.Suggestions) != 0 || strings.Contains(err.Error(), "did you mean") {
		t.Errorf("got %v", err)
	}
	// A very long word is cut in the error.
	bad[5] = strings.Repeat("q", 500)
	_, err = ParseMnemonic(strings.Join(bad, " "))
	if !errors.As(err, &e) || len(e.Word) != 32 || len(err.Error()) > 200 {
		t.Errorf("long word echoed in full: %v", err)
	}
	bad[5] = strings.Repeat("é", 40) // cut at a character boundary
	_, err = ParseMnemonic(strings.Join(bad, " "))
	if !errors.As(err, &e) || e.Word != strings.Repeat("é", 16) {
		t.Errorf("long non-ASCII word: %q", e.Word)
	}
}

func TestParseMnemonicChecksum(t *testing.T) {
	w := strings.Fields(countingWords)
	for _, mutate := range []func([]string){
		func(w []string) { w[0], w[1] = w[1], w[0] },
		func(w []string) { w[23] = "abandon" },
		func(w []string) { w[11] = "zoo" },
	} {
		bad := slices.Clone(w)
		mutate(bad)
		if _, err := ParseMnemonic(strings.Join(bad, " ")); !errors.Is(err, ErrChecksum) {
			t.Errorf("%q: got %v, want ErrChecksum", bad, err)
		}
	}
}

func TestParseMnemonicLenient(t *testing.T) {
	want := mustIdentity(t, countingWords).PublicKey()
	w := strings.Fields(countingWords)
	var numberedDot, numberedParen, columns, upper strings.Builder
	for i, x := range w {
		numberedDot.WriteString(itoa(uint32(i+1)) + ". " + x + "\n")
		numberedParen.WriteString("(" + itoa(uint32(i+1)) + ") " + x + ", ")
		columns.WriteString(itoa(uint32(i+1)) + "." + x)
		if i%4 == 3 {
			columns.WriteString("\r\n")
		} else {
			columns.WriteString("\t\t")
		}
		upper.WriteString(strings.ToUpper(x) + "  ")
	}
	for name, text := range map[string]string{
		"dot":          numberedDot.String(),
		"paren-commas": numberedParen.String(),
		"columns-crlf": columns.String(),
		"upper":        upper.String(),
		"comments":     "# my backup, keep safe\n" + countingWords + " # end\n# done",
		"padding":      "\n\n   " + strings.Join(w, "\n \t ") + "   \n",
	} {
		m, err := ParseMnemonic(text)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if m.Phrase() != countingWords {
			t.Errorf("%s: normalised to %q", name, m.Phrase())
		}
		id, err := FromMnemonic(m)
		if err != nil || id.PublicKey() != want {
			t.Errorf("%s: different identity", name)
		}
	}
}

func TestParseMnemonicTooLong(t *testing.T) {
	_, err := ParseMnemonic(countingWords + strings.Repeat(" ", 5000))
	if err == nil || !strings.Contains(err.Error(), "too long") {
		t.Errorf("got %v", err)
	}
}

func TestMnemonicAccessors(t *testing.T) {
	m, err := ParseMnemonic(countingWords)
	if err != nil {
		t.Fatal(err)
	}
	words := m.Words()
	if len(words) != MnemonicWords {
		t.Fatalf("%d words", len(words))
	}
	words[0] = "zoo" // a copy: m is unchanged
	if m.Words()[0] != "abandon" {
		t.Error("Words returned the internal slice")
	}
	if m.IsZero() || !(Mnemonic{}).IsZero() {
		t.Error("IsZero")
	}
	if _, err := FromMnemonic(Mnemonic{}); err == nil {
		t.Error("FromMnemonic accepted the zero Mnemonic")
	}
	if !IsWord(" Abandon ") || IsWord("abandn") {
		t.Error("IsWord")
	}
	if s := SuggestWords("ZOO", 3); len(s) == 0 || s[0] != "zoo" {
		t.Errorf("SuggestWords(ZOO) = %q", s)
	}
}

func TestNewMnemonicIsRandom(t *testing.T) {
	a, err := NewMnemonic()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewMnemonic()
	if a.Phrase() == b.Phrase() {
		t.Fatal("two fresh mnemonics are equal")
	}
	if _, err := ParseMnemonic(a.Phrase()); err != nil {
		t.Fatalf("a fresh mnemonic does not parse: %v", err)
	}
}

func TestEditDistance(t *testing.T) {
	for _, c := range []struct {
		a, b string
		d    int
	}{
		{"abandon", "abandon", 0}, {"abandon", "abandn", 1}, {"liar", "lair", 1},
		{"cage", "cagee", 1}, {"zoo", "", 3}, {"", "zoo", 3}, {"kitten", "sitting", 3},
		{"ca", "abc", 3}, {"gather", "gathre", 1},
	} {
		if got := editDistance(c.a, c.b); got != c.d {
			t.Errorf("editDistance(%q, %q) = %d, want %d", c.a, c.b, got, c.d)
		}
		if got := editDistance(c.b, c.a); got != c.d {
			t.Errorf("editDistance(%q, %q) = %d, want %d", c.b, c.a, got, c.d)
		}
	}
}
