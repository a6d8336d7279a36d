package kez

import "crypto/sha512"

// Safety numbers (docs/spec/identity.md §4): the labels and the iteration
// count are part of the format.
const (
	safetyNumberDomain     = "kez/v1 safety number\x00"
	safetyNumberIterations = 5200
)

// SafetyNumber returns the number two people compare to check, in one go,
// that each holds the other's real key: 60 digits in twelve groups of five,
// separated by single spaces. Each side computes it from its own key and
// the key it holds for the other; the order of a and b does not matter, so
// both sides see the same number, and any other key on either side gives
// another number.
//
// Each half is the 30-digit summary of one key (5,200 rounds of SHA-512
// over the key, about 100 bits); the smaller half comes first. The number
// is for people to compare, as a fingerprint is: software compares keys.
// See docs/spec/identity.md, "Safety number".
func SafetyNumber(a, b PublicKey) string {
	ha, hb := safetyHalf(a), safetyHalf(b)
	if hb < ha {
		ha, hb = hb, ha
	}
	return ha + " " + hb
}

// safetyHalf is one key's half of a safety number: six groups of five
// digits from SHA-512 iterated over the key.
func safetyHalf(k PublicKey) string {
	h := sha512.Sum512(append([]byte(safetyNumberDomain), k[:]...))
	buf := make([]byte, 0, sha512.Size+len(k))
	for range safetyNumberIterations {
		buf = append(append(buf[:0], h[:]...), k[:]...)
		h = sha512.Sum512(buf)
	}
	return digitGroups(h[:30])
}
