package kez

import (
	"crypto/rand"
	"errors"
	"fmt"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/tyler-smith/go-bip39"
)

// MnemonicWords is the number of words in a KEZ paper backup (256 bits of
// entropy plus an 8-bit checksum).
const MnemonicWords = 24

// maxMnemonicInput bounds the text accepted as a mnemonic, so a pasted file
// cannot make the parser do unbounded work.
const maxMnemonicInput = 4096

// ErrChecksum reports 24 valid words whose checksum does not match: usually
// two words swapped or one valid word written in place of another.
var ErrChecksum = errors.New("kez: the words are all valid but their checksum does not match; check each word against your paper backup")

// WordCountError reports a mnemonic with the wrong number of words.
type WordCountError struct {
	Got int // the number of words found
}

// Error says how many words were found and how many a backup has.
func (e *WordCountError) Error() string {
	return fmt.Sprintf("kez: a paper backup has %d words, got %d", MnemonicWords, e.Got)
}

// WordError reports a word that is not in the BIP-39 English word list.
type WordError struct {
	Position    int      // 1-based position of the word
	Word        string   // the word as given, lower-cased, cut to 32 bytes
	Suggestions []string // the nearest valid words, best first; may be empty
}

// Error names the word's position and suggests replacements.
func (e *WordError) Error() string {
	msg := fmt.Sprintf("kez: word %d (%q) is not a backup word", e.Position, e.Word)
	if len(e.Suggestions) > 0 {
		q := quoteAll(e.Suggestions)
		if len(q) > 1 {
			q = append(q[:len(q)-2], q[len(q)-2]+" or "+q[len(q)-1])
		}
		msg += "; did you mean " + strings.Join(q, ", ") + "?"
	}
	return msg
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}

// Mnemonic is a checked 24-word paper backup. The zero value holds no
// words. A Mnemonic is immutable and safe for concurrent use.
type Mnemonic struct {
	words []string
}

// NewMnemonic makes a mnemonic from 32 bytes of crypto/rand entropy.
func NewMnemonic() (Mnemonic, error) {
	entropy := make([]byte, 32)
	if _, err := rand.Read(entropy); err != nil {
		return Mnemonic{}, fmt.Errorf("kez: reading randomness: %w", err)
	}
	return MnemonicFromEntropy(entropy)
}

// MnemonicFromEntropy returns the words of 32 bytes of entropy (BIP-39).
// Use it for reproducible test identities; real identities come from
// [NewIdentity] or [NewMnemonic].
func MnemonicFromEntropy(entropy []byte) (Mnemonic, error) {
	if len(entropy) != 32 {
		return Mnemonic{}, fmt.Errorf("kez: a paper backup holds 32 bytes of entropy, got %d", len(entropy))
	}
	s, err := bip39.NewMnemonic(entropy)
	if err != nil {
		return Mnemonic{}, fmt.Errorf("kez: making mnemonic: %w", err)
	}
	return Mnemonic{words: strings.Fields(s)}, nil
}

// ParseMnemonic checks a paper backup: the word count, every word (an
// unknown word is named by position, with the nearest valid words
// suggested), and the checksum. It is lenient about layout, strict about
// content: any letter case, extra spaces and line breaks, numbering and
// punctuation around a word ("1.", "12)", "(3)", "abandon,") and comment
// lines starting with "#" are accepted. Input longer than 4096 bytes is
// refused.
//
// The errors are [*WordCountError], [*WordError], [ErrChecksum], or a
// plain error for input that is too long.
func ParseMnemonic(s string) (Mnemonic, error) {
	if len(s) > maxMnemonicInput {
		return Mnemonic{}, fmt.Errorf("kez: the backup text is too long (%d bytes, at most %d)", len(s), maxMnemonicInput)
	}
	words := splitWords(s)
	if len(words) != MnemonicWords {
		return Mnemonic{}, &WordCountError{Got: len(words)}
	}
	for i, w := range words {
		if _, ok := bip39.GetWordIndex(w); !ok {
			return Mnemonic{}, &WordError{Position: i + 1, Word: cutWord(w), Suggestions: SuggestWords(w, 3)}
		}
	}
	if _, err := bip39.EntropyFromMnemonic(strings.Join(words, " ")); err != nil {
		return Mnemonic{}, ErrChecksum
	}
	return Mnemonic{words: words}, nil
}

// maxWordEcho bounds how much of an unknown word an error repeats.
const maxWordEcho = 32

// cutWord cuts w to at most maxWordEcho bytes at a character boundary.
func cutWord(w string) string {
	if len(w) <= maxWordEcho {
		return w
	}
	n := maxWordEcho
	for n > 0 && !utf8.RuneStart(w[n]) {
		n--
	}
	return w[:n]
}

// SplitMnemonic returns the words [ParseMnemonic] reads from s, in order,
// before any is checked: lower-cased, comments dropped, numbering and
// punctuation trimmed. A reader that takes a backup piece by piece (a word
// or a line at a time) uses it to check each word as it comes with
// [IsWord], then parses the whole.
func SplitMnemonic(s string) []string {
	if len(s) > maxMnemonicInput {
		s = s[:maxMnemonicInput]
	}
	return splitWords(s)
}

// splitWords lower-cases s, drops comments ("#" to the end of the line),
// splits it at white space and trims everything but letters from both ends
// of each piece; a piece with no letters (a bare number) is dropped.
func splitWords(s string) []string {
	var words []string
	for _, line := range strings.Split(strings.ToLower(s), "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		for _, f := range strings.Fields(line) {
			f = strings.TrimFunc(f, func(r rune) bool { return !unicode.IsLetter(r) })
			if f != "" {
				words = append(words, f)
			}
		}
	}
	return words
}

// Words returns the 24 words in order.
func (m Mnemonic) Words() []string { return append([]string(nil), m.words...) }

// IsZero reports whether m holds no words.
func (m Mnemonic) IsZero() bool { return len(m.words) == 0 }

// seed is the standard BIP-39 seed (PBKDF2-HMAC-SHA512, empty passphrase).
func (m Mnemonic) seed() []byte { return bip39.NewSeed(m.Phrase(), "") }

// IsWord reports whether w (any case) is a valid backup word.
func IsWord(w string) bool {
	_, ok := bip39.GetWordIndex(strings.ToLower(strings.TrimSpace(w)))
	return ok
}

// SuggestWords returns up to n valid words nearest to w, best first: words
// sharing w's first four letters (unique in the BIP-39 list) come first,
// then words by edit distance (at most 2, a swap of neighbouring letters
// counting as one); ties go to the longer common prefix, then the closer
// length.
func SuggestWords(w string, n int) []string {
	w = strings.ToLower(w)
	if len(w) > maxWordEcho {
		w = w[:maxWordEcho]
	}
	type cand struct {
		word           string
		dist, pre, len int
	}
	var cands []cand
	for _, v := range bip39.GetWordList() {
		var d int
		switch {
		case len(w) >= 4 && strings.HasPrefix(v, w[:4]):
			d = -1
		case abs(len(w)-len(v)) > 2:
			continue // the edit distance is at least the length difference
		default:
			d = editDistance(v, w)
		}
		if d <= 2 {
			cands = append(cands, cand{v, d, -commonPrefix(w, v), abs(len(w) - len(v))})
		}
	}
	sort.SliceStable(cands, func(i, j int) bool {
		a, b := cands[i], cands[j]
		if a.dist != b.dist {
			return a.dist < b.dist
		}
		if a.pre != b.pre {
			return a.pre < b.pre
		}
		return a.len < b.len
	})
	out := []string{}
	for i := 0; i < len(cands) && i < n; i++ {
		out = append(out, cands[i].word)
	}
	return out
}

func commonPrefix(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// editDistance is the Damerau (optimal string alignment) distance over
// bytes, so a swap of two neighbouring letters counts as one mistake. b must
// be at most 32 bytes (callers cut their input); it keeps three rows on the
// stack.
func editDistance(a, b string) int {
	var rows [3][maxWordEcho + 1]int
	prev2, prev, cur := &rows[0], &rows[1], &rows[2]
	for j := 0; j <= len(b); j++ {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
