package handles

import (
	"encoding/json"
	"testing"
	"unicode/utf8"
)

// TestSkeletonRules covers each rule of the skeleton: two names that
// need it share the skeleton want, and a control name the rule must not
// touch has another.
func TestSkeletonRules(t *testing.T) {
	for _, tc := range []struct {
		rule, a, b, want, control string
	}{
		{"separators . - _", "al.ice", "a-l_ice", "allce", "alce"},
		{"TS #39 0 → O, lower-cased", "b0b", "bob", "bob", "bab"},
		{"TS #39 1 → l", "ne1l", "nell", "nell", "nel"},
		{"i → l", "neil", "nell", "nell", "nejl"},
		{"1, i and l are one letter", "a1ice", "alice", "allce", "aice"},
		{"5 → s", "5am", "sam", "sam", "6am"},
		{"8 → b", "8ob", "bob", "bob", "9ob"},
		{"TS #39 m → rn", "rnallory", "mallory", "mallory", "nallory"},
		{"vv → w", "vvalter", "walter", "walter", "valter"},
		{"cl → d", "clave", "dave", "dave", "cave"},
		{"a pair across a separator", "r.nallory", "mallory", "mallory", "r.allory"},
		{"a fold that makes a pair: c1 → cl → d", "c1ave", "dave", "dave", "c2ave"},
		{"i → l, then cl → d", "ciave", "dave", "dave", "cjave"},
		{"pairs fold from the left", "vvv", "wv", "wv", "vw"},
		{"a pair folds once", "rrnn", "rmn", "rmn", "mm"},
		{"digits alone", "007", "oo7", "oo7", "oo8"},
		{"every fold at once", "rn.0-1_5vv8cl", "m0l5wbd", "molswbd", "molswbcd"},
	} {
		t.Run(tc.rule, func(t *testing.T) {
			if sa, sb := Skeleton(tc.a), Skeleton(tc.b); sa != tc.want || sb != tc.want {
				t.Errorf("Skeleton(%q) = %q, Skeleton(%q) = %q; want both %q", tc.a, sa, tc.b, sb, tc.want)
			}
			if sc := Skeleton(tc.control); sc == tc.want {
				t.Errorf("control: Skeleton(%q) = %q too", tc.control, sc)
			}
		})
	}
}

// TestSkeletonFindings are the names of issue 13's finding 9: each must
// share its skeleton with the name it imitates.
func TestSkeletonFindings(t *testing.T) {
	for look, real := range map[string]string{
		"b0b": "bob", "a1ice": "alice", "rnallory": "mallory", "ai1ce": "alice",
		"8o8": "bob", "5am": "sam", "vvendy": "wendy", "clave": "dave",
	} {
		if Skeleton(look) != Skeleton(real) {
			t.Errorf("Skeleton(%q) = %q, Skeleton(%q) = %q", look, Skeleton(look), real, Skeleton(real))
		}
	}
}

// TestSkeletonConfusables: text Parse refuses still gets the skeleton of
// what it imitates, so the rule holds for any caller.
func TestSkeletonConfusables(t *testing.T) {
	for in, want := range map[string]string{
		"\u0430lice":    "allce", // Cyrillic а
		"\u03bf\u0440":  "op",    // Greek omicron, Cyrillic er
		"\uff41lice":    "allce", // full-width ａ
		"ALICE":         "allce",
		"b\u043eb":      "bob",
		"al\u2010ice":   "allce",      // hyphen U+2010 is a separator
		"caf\u00e9":     "cafe\u0301", // NFD; the mark stays
		"r\u0301n":      "r\u0301n",   // a mark between r and n: no pair
		"\u0301.\u0316": "\u0316\u0301",
		"":              "",
		"\xff":          "\xff", // not UTF-8: kept
		"\xffi\u0430":   "\xffla",
	} {
		if got := Skeleton(in); got != want {
			t.Errorf("Skeleton(%+q) = %+q, want %+q", in, got, want)
		}
	}
}

type skeletonVector struct {
	Name     string `json:"name"`
	Skeleton string `json:"skeleton"`
}

// TestSpecSkeletonVectors checks the vectors of docs/spec/handles.md.
func TestSpecSkeletonVectors(t *testing.T) {
	var vs []skeletonVector
	if err := json.Unmarshal(specVectors(t, "skeleton"), &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) < 10 {
		t.Fatalf("only %d skeleton vectors", len(vs))
	}
	for _, v := range vs {
		if got := Skeleton(v.Name); got != v.Skeleton {
			t.Errorf("Skeleton(%q) = %q, the spec says %q", v.Name, got, v.Skeleton)
		}
	}
}

func TestReservedLookAlikes(t *testing.T) {
	for _, name := range []string{"admin", "adm1n", "ad.min", "r00t", "5upport", "norep1y", "rnoderator", "vvebmaster", "ro.ot"} {
		if !IsReserved(name) {
			t.Errorf("%s is not reserved", name)
		}
	}
	for _, name := range []string{"alice", "bob", "adrnins", "roots"} {
		if IsReserved(name) {
			t.Errorf("%s is reserved", name)
		}
	}
}

func FuzzSkeleton(f *testing.F) {
	for _, s := range []string{"alice", "a1ice", "rnallory", "b0b", "vvv", "c1", "r.n", "\u0430lice", "caf\u00e9", "\u0301.\u0316", "\xff\xfe", "ＡＢ"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sk := Skeleton(s)
		if again := Skeleton(sk); again != sk {
			t.Fatalf("Skeleton(%+q) = %+q, but Skeleton of that is %+q", s, sk, again)
		}
		if len(sk) > len(s)*3+3 {
			t.Fatalf("Skeleton(%+q) grew to %d bytes", s, len(sk))
		}
		if utf8.ValidString(s) && !utf8.ValidString(sk) {
			t.Fatalf("Skeleton(%+q) = %+q is not UTF-8", s, sk)
		}
		if h, err := Parse(s, "kez.lat"); err == nil {
			for i := 0; i < len(Skeleton(h.Name)); i++ {
				if c := Skeleton(h.Name)[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
					t.Fatalf("the skeleton of the valid name %q has %q", h.Name, c)
				}
			}
		}
	})
}
