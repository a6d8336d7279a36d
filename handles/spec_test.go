package handles

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/kez"
)

// specVectors returns the JSON block that follows "<!-- vectors:NAME -->"
// in docs/spec/handles.md.
func specVectors(t testing.TB, name string) []byte {
	t.Helper()
	doc, err := os.ReadFile("../docs/spec/handles.md")
	if err != nil {
		t.Fatal(err)
	}
	marker := []byte("<!-- vectors:" + name + " -->\n```json\n")
	i := bytes.Index(doc, marker)
	if i < 0 {
		t.Fatalf("spec has no vectors %q", name)
	}
	rest := doc[i+len(marker):]
	end := bytes.Index(rest, []byte("\n```"))
	if end < 0 {
		t.Fatalf("vectors %q are not closed", name)
	}
	return rest[:end]
}

type parseVector struct {
	Input         string `json:"input"`
	InputHex      string `json:"input_hex"`
	DefaultDomain string `json:"default_domain"`
	AllowLocal    bool   `json:"allow_local"`
	Handle        string `json:"handle"`
	Reason        Reason `json:"reason"`
	ClaimReason   Reason `json:"claim_reason"`
}

func loadParseVectors(t testing.TB) []parseVector {
	var vs []parseVector
	if err := json.Unmarshal(specVectors(t, "handle-parse"), &vs); err != nil {
		t.Fatal(err)
	}
	for i := range vs {
		if vs[i].InputHex != "" {
			b, err := hex.DecodeString(vs[i].InputHex)
			if err != nil {
				t.Fatal(err)
			}
			vs[i].Input = string(b)
		}
	}
	return vs
}

func TestSpecParseVectors(t *testing.T) {
	vs := loadParseVectors(t)
	seen := map[Reason]bool{}
	for _, v := range vs {
		rules := Rules{DefaultDomain: v.DefaultDomain, AllowLocal: v.AllowLocal}
		h, err := rules.Parse(v.Input)
		if v.Reason != "" {
			seen[v.Reason] = true
			if got := ReasonOf(err); got != v.Reason {
				t.Errorf("Parse(%q): reason %q (err %v), want %q", v.Input, got, err, v.Reason)
			}
			continue
		}
		if err != nil {
			t.Errorf("Parse(%q): %v", v.Input, err)
			continue
		}
		if h.String() != v.Handle {
			t.Errorf("Parse(%q) = %q, want %q", v.Input, h, v.Handle)
		}
		// The canonical form parses to itself.
		if h2, err := rules.Parse(h.String()); err != nil || h2 != h {
			t.Errorf("canonical %q does not round-trip: %v %v", h, h2, err)
		}
		if got := ReasonOf(CheckClaimable(h)); got != v.ClaimReason {
			t.Errorf("CheckClaimable(%q): reason %q, want %q", h, got, v.ClaimReason)
		}
		if v.ClaimReason != "" {
			seen[v.ClaimReason] = true
		}
	}
	// Every reason has at least one vector.
	for _, r := range []Reason{ReasonEmpty, ReasonTooShort, ReasonTooLong, ReasonBadCharacter, ReasonBadSeparator,
		ReasonBadForm, ReasonNoDomain, ReasonInvalidUTF8, ReasonInvisible, ReasonFullWidth, ReasonHomoglyph,
		ReasonMixedScript, ReasonNonASCII, ReasonBadDomain, ReasonIDNA, ReasonLocalDomain, ReasonReserved} {
		if !seen[r] {
			t.Errorf("the spec has no vector for reason %q", r)
		}
	}
}

func TestSpecClaimVector(t *testing.T) {
	var v struct {
		Mnemonic, Handle, Server, Key, Statement, Signature string
		Timestamp                                           int64
	}
	if err := json.Unmarshal(specVectors(t, "claim"), &v); err != nil {
		t.Fatal(err)
	}
	id, err := kez.FromWords(v.Mnemonic)
	if err != nil {
		t.Fatal(err)
	}
	if id.PublicKey().String() != v.Key {
		t.Fatalf("key %s, want %s", id.PublicKey(), v.Key)
	}
	h, err := Parse(v.Handle, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := string(ClaimStatement(h, v.Server, id.PublicKey(), v.Timestamp)); got != v.Statement {
		t.Fatalf("statement\n%q\nwant\n%q", got, v.Statement)
	}
	c, err := NewClaim(id, h, time.Unix(v.Timestamp, 0))
	if err != nil {
		t.Fatal(err)
	}
	if c.Signature != v.Signature || c.Key != v.Key || c.Handle != v.Handle || c.Timestamp != v.Timestamp {
		t.Fatalf("claim %+v does not match the vector", c)
	}
	if _, _, err := c.Verify(Rules{}, v.Server, time.Unix(v.Timestamp+60, 0)); err != nil {
		t.Fatal(err)
	}
}

type resourceVector struct {
	Resource   string `json:"resource"`
	AllowLocal bool   `json:"allow_local"`
	Handle     string `json:"handle"`
	Fail       string `json:"fail"`
}

func loadResourceVectors(t testing.TB) []resourceVector {
	var vs []resourceVector
	if err := json.Unmarshal(specVectors(t, "webfinger-resource"), &vs); err != nil {
		t.Fatal(err)
	}
	return vs
}

func TestSpecWebFingerResourceVectors(t *testing.T) {
	for _, v := range loadResourceVectors(t) {
		h, err := ParseWebFingerResource(v.Resource, v.AllowLocal)
		if v.Fail != "" {
			if err == nil {
				t.Errorf("ParseWebFingerResource(%q) = %v, want an error (%s)", v.Resource, h, v.Fail)
			} else if ReasonOf(err) == "" {
				t.Errorf("ParseWebFingerResource(%q): error %v is not a *HandleError", v.Resource, err)
			}
			continue
		}
		if err != nil || h.String() != v.Handle {
			t.Errorf("ParseWebFingerResource(%q) = %v, %v; want %s", v.Resource, h, err, v.Handle)
		}
	}
}

func TestSpecListsReservedNames(t *testing.T) {
	doc, err := os.ReadFile("../docs/spec/handles.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(strings.Fields(string(doc)), " "), strings.Join(ReservedNames(), " ")) {
		t.Errorf("docs/spec/handles.md does not list the reserved names as the code has them:\n%s", strings.Join(ReservedNames(), " "))
	}
}

// The spec names every field and URI the code sends.
func TestSpecNamesWireFields(t *testing.T) {
	doc, err := os.ReadFile("../docs/spec/handles.md")
	if err != nil {
		t.Fatal(err)
	}
	names := []string{RelKey, RelSigchain, PropKey, PropFingerprint, JRDContentType, kez.ContextHandleClaim}
	for _, v := range []any{LookupRecord{}, Claim{}} {
		b, _ := json.Marshal(v)
		var m map[string]any
		json.Unmarshal(b, &m)
		for k := range m {
			names = append(names, `"`+k+`"`)
		}
	}
	for _, n := range names {
		if !strings.Contains(string(doc), n) {
			t.Errorf("docs/spec/handles.md does not mention %s", n)
		}
	}
}
