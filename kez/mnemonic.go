package kez

import (
	"crypto/rand"
	"errors"
	"fmt"
	"sort"
	"strings"

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
	Got int
}

func (e *WordCountError) Error() string {
	return fmt.Sprintf("kez: a paper backup has %d words, got %d", MnemonicWords, e.Got)
}

// WordError reports a word that is not in the BIP-39 English word list.
type WordError struct {
	Position    int      // 1-based position of the word
	Word        string   // the word as given (normalised to lower case)
	Suggestions []string // the nearest valid words, best first; may be empty
}

func (e *WordError) Error() string {
	msg := fmt.Sprintf("kez: word %d (%q) is not a backup word", e.Position, e.Word)
	if len(e.Suggestions) > 0 {
		msg += "; did you mean " + strings.Join(quoteAll(e.Suggestions), " or ") + "?"
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

// Mnemonic is a checked 24-word paper backup.
type Mnemonic struct {
	words []string
}

// NewMnemonic makes a mnemonic from 32 bytes of crypto/rand entropy.
func NewMnemonic() (Mnemonic, error) {
	entropy := make([]byte, 32)
	if _, err := rand.Read(entropy); err != nil {
		return Mnemonic{}, fmt.Errorf("kez: reading randomness: %w", err)
	}
	return mnemonicFromEntropy(entropy)
}

func mnemonicFromEntropy(entropy []byte) (Mnemonic, error) {
	s, err := bip39.NewMnemonic(entropy)
	if err != nil {
		return Mnemonic{}, fmt.Errorf("kez: making mnemonic: %w", err)
	}
	return Mnemonic{words: strings.Fields(s)}, nil
}

// ParseMnemonic checks a paper backup: the word count, every word (an
// unknown word is named by position, with the nearest valid words
// suggested), and the checksum. Extra whitespace, line breaks, numbering
// such as "1." or "12)" and any letter case are accepted.
func ParseMnemonic(s string) (Mnemonic, error) {
	if len(s) > maxMnemonicInput {
		return Mnemonic{}, fmt.Errorf("kez: the backup text is too long (%d bytes, at most %d)", len(s), maxMnemonicInput)
	}
	var words []string
	for _, f := range strings.Fields(strings.ToLower(s)) {
		f = strings.TrimLeft(f, "0123456789")
		f = strings.TrimLeft(f, ".):-")
		if f == "" {
			continue // a bare number
		}
		words = append(words, f)
	}
	if len(words) != MnemonicWords {
		return Mnemonic{}, &WordCountError{Got: len(words)}
	}
	for i, w := range words {
		if _, ok := bip39.GetWordIndex(w); !ok {
			return Mnemonic{}, &WordError{Position: i + 1, Word: w, Suggestions: SuggestWords(w, 3)}
		}
	}
	if _, err := bip39.EntropyFromMnemonic(strings.Join(words, " ")); err != nil {
		return Mnemonic{}, ErrChecksum
	}
	return Mnemonic{words: words}, nil
}

// Words returns the 24 words in order.
func (m Mnemonic) Words() []string { return append([]string(nil), m.words...) }

// String returns the words separated by single spaces.
func (m Mnemonic) String() string { return strings.Join(m.words, " ") }

// IsZero reports whether m holds no words.
func (m Mnemonic) IsZero() bool { return len(m.words) == 0 }

// seed is the standard BIP-39 seed (PBKDF2-HMAC-SHA512, empty passphrase).
func (m Mnemonic) seed() []byte { return bip39.NewSeed(m.String(), "") }

// IsWord reports whether w (any case) is a valid backup word.
func IsWord(w string) bool {
	_, ok := bip39.GetWordIndex(strings.ToLower(strings.TrimSpace(w)))
	return ok
}

// SuggestWords returns up to n valid words nearest to w, best first: words
// sharing w's first four letters (unique in the BIP-39 list) come first,
// then words by edit distance (at most 2).
func SuggestWords(w string, n int) []string {
	w = strings.ToLower(w)
	if len(w) > 32 {
		w = w[:32]
	}
	type cand struct {
		word string
		dist int
	}
	var cands []cand
	for _, v := range bip39.GetWordList() {
		d := editDistance(w, v)
		if len(w) >= 4 && strings.HasPrefix(v, w[:4]) {
			d = -1
		}
		if d <= 2 {
			cands = append(cands, cand{v, d})
		}
	}
	sort.SliceStable(cands, func(i, j int) bool { return cands[i].dist < cands[j].dist })
	out := []string{}
	for i := 0; i < len(cands) && i < n; i++ {
		out = append(out, cands[i].word)
	}
	return out
}

// editDistance is the Damerau (optimal string alignment) distance, so a
// swap of two neighbouring letters counts as one mistake.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}
