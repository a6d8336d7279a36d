package kez

import (
	"encoding/hex"
	"os"
	"regexp"
	"strings"
	"testing"
)

// specSafetyTables reads the safety-number vectors of docs/spec/identity.md:
// the keys by name with their halves, and the rows "X, Y | number".
func specSafetyTables(t *testing.T) (keys map[string]PublicKey, halves map[string]string, numbers [][3]string) {
	t.Helper()
	spec, err := os.ReadFile("../docs/spec/identity.md")
	if err != nil {
		t.Fatal(err)
	}
	keyRow := regexp.MustCompile("(?m)^\\| ([A-Z]) \\| `([0-9a-f]{64})` \\| `([0-9 ]+)` \\|$")
	numRow := regexp.MustCompile("(?m)^\\| ([A-Z]), ([A-Z]) \\| `([0-9 ]+)` \\|$")
	keys, halves = map[string]PublicKey{}, map[string]string{}
	for _, m := range keyRow.FindAllStringSubmatch(string(spec), -1) {
		raw, err := hex.DecodeString(m[2])
		if err != nil {
			t.Fatal(err)
		}
		k, err := PublicKeyFromEd25519(raw)
		if err != nil {
			t.Fatalf("key %s: %v", m[1], err)
		}
		keys[m[1]], halves[m[1]] = k, m[3]
	}
	for _, m := range numRow.FindAllStringSubmatch(string(spec), -1) {
		numbers = append(numbers, [3]string{m[1], m[2], m[3]})
	}
	if len(keys) < 3 || len(numbers) < 4 {
		t.Fatalf("docs/spec/identity.md: found %d keys and %d safety numbers, want at least 3 and 4", len(keys), len(numbers))
	}
	return keys, halves, numbers
}

// TestSafetyNumberVectors checks every vector of the spec page, which is
// all another implementation has to go by.
func TestSafetyNumberVectors(t *testing.T) {
	keys, halves, numbers := specSafetyTables(t)
	for name, k := range keys {
		if got := safetyHalf(k); got != halves[name] {
			t.Errorf("half(%s) = %q, the spec says %q", name, got, halves[name])
		}
	}
	for _, row := range numbers {
		a, okA := keys[row[0]]
		b, okB := keys[row[1]]
		if !okA || !okB {
			t.Fatalf("row %v names a key the spec does not list", row)
		}
		if got := SafetyNumber(a, b); got != row[2] {
			t.Errorf("SafetyNumber(%s, %s) = %q, the spec says %q", row[0], row[1], got, row[2])
		}
	}
	// The keys are those of the identity vectors, as the page says.
	vf := loadVectorsForFuzz(t)
	for i, name := range []string{"A", "B", "C"} {
		if k := keys[name]; hex.EncodeToString(k[:]) != vf.Identities[i].Ed25519PublicHex {
			t.Errorf("key %s is not the public key of identity vector %d", name, i)
		}
	}
	spec, _ := os.ReadFile("../docs/spec/identity.md")
	if !strings.Contains(string(spec), strings.TrimSuffix(safetyNumberDomain, "\x00")+`\x00`) || !strings.Contains(string(spec), "5200") {
		t.Error("the spec does not show the label and the iteration count the code uses")
	}
}

func TestSafetyNumberProperties(t *testing.T) {
	var ids []PublicKey
	for i := range 4 {
		e := make([]byte, 32)
		e[0] = byte(i)
		m, err := MnemonicFromEntropy(e)
		if err != nil {
			t.Fatal(err)
		}
		id, err := FromMnemonic(m)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id.PublicKey())
	}
	form := regexp.MustCompile(`^[0-9]{5}( [0-9]{5}){11}$`)
	seen := map[string]bool{}
	for i, a := range ids {
		for j, b := range ids {
			n := SafetyNumber(a, b)
			if !form.MatchString(n) {
				t.Fatalf("SafetyNumber(%d, %d) = %q: not twelve groups of five digits", i, j, n)
			}
			if n != SafetyNumber(b, a) {
				t.Errorf("SafetyNumber(%d, %d) depends on the order", i, j)
			}
			if j >= i {
				if seen[n] {
					t.Errorf("SafetyNumber(%d, %d) repeats another pair's number", i, j)
				}
				seen[n] = true
			}
			// Each half is one key's, never its fingerprint.
			if !strings.Contains(n, safetyHalf(a)) || strings.Contains(n, a.Fingerprint()) {
				t.Errorf("SafetyNumber(%d, %d) = %q does not hold the half of key %d, or holds its fingerprint", i, j, n, i)
			}
		}
	}
	// A key that differs in one bit changes the number.
	a, b := ids[0], ids[1]
	for bit := 0; bit < 256; bit += 37 {
		c := b
		c[bit/8] ^= 1 << (bit % 8)
		if SafetyNumber(a, c) == SafetyNumber(a, b) {
			t.Errorf("flipping bit %d of a key keeps the safety number", bit)
		}
	}
}
