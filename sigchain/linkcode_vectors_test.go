package sigchain

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
)

const linkCodeVectorFile = "testdata/link_codes.json"

// linkCodeVectors is testdata/link_codes.json: link requests with their
// codes, other spellings of codes, and texts that are not codes.
type linkCodeVectors struct {
	Description string           `json:"description"`
	Codes       []linkCodeVector `json:"codes"`
	Equivalent  []codeSpelling   `json:"equivalent"`
	Bad         []string         `json:"bad"`
}

type linkCodeVector struct {
	Request string `json:"request,omitempty"` // the request's exact bytes, as text
	Digest  string `json:"digest"`            // hex of the code's 10 bytes
	Code    string `json:"code"`
}

type codeSpelling struct {
	Text string `json:"text"`
	Code string `json:"code"`
}

func generateLinkCodeVectors(t *testing.T) *linkCodeVectors {
	v := &linkCodeVectors{
		Description: "Each request's code is the first 10 bytes of SHA-256(\"kez/v1 device link code\\u0000\" || the request's exact bytes), written as 16 Crockford base32 characters and a check character (docs/spec/sigchain.md, \"Devices\"). Requests are JSON strings holding the request's exact bytes. Each equivalent text parses to its code (a QR code holds \"KEZ-LINK:\" and the code's text); each bad text is refused.",
	}
	for i, name := range []string{"laptop", "phone <work> & ü", "Küchen-Tablet"} {
		r := testRequest(t, testDevice(t, byte(i+1)), name, vectorNow-int64(i)*60, byte(16*i))
		c := r.Code()
		v.Codes = append(v.Codes, linkCodeVector{Request: string(r.Bytes()), Digest: hex.EncodeToString(c[:]), Code: c.String()})
	}
	var zero, ones LinkCode
	for i := range ones {
		ones[i] = 0xff
	}
	v.Codes = append(v.Codes,
		linkCodeVector{Digest: hex.EncodeToString(zero[:]), Code: zero.String()},
		linkCodeVector{Digest: hex.EncodeToString(ones[:]), Code: ones.String()})
	c := v.Codes[0].Code
	plain := strings.ReplaceAll(c, "-", "")
	v.Equivalent = []codeSpelling{
		{strings.ToLower(c), c},
		{plain, c},
		{plain[:4] + " " + plain[4:8] + " " + plain[8:12] + " " + plain[12:16] + " " + plain[16:], c},
		{strings.ReplaceAll(zero.String(), "0", "o"), zero.String()},
		{LinkCodeURIPrefix + c, c},
		{strings.ToLower(LinkCodeURIPrefix) + plain, c},
	}
	typo := []byte(plain)
	typo[3] = crockford[(strings.IndexByte(crockford, typo[3])+1)%32]
	swap := []byte(plain)
	for i := 0; i+1 < len(swap); i++ {
		if swap[i] != swap[i+1] {
			swap[i], swap[i+1] = swap[i+1], swap[i]
			break
		}
	}
	v.Bad = []string{"", plain[:16], plain + "0", string(typo), string(swap), "U" + plain[1:], plain[:8] + "_" + plain[8:], LinkCodeURIPrefix, LinkCodeURIPrefix + LinkCodeURIPrefix + c, "KEZ-LINK " + c, "kez:" + c}
	return v
}

func TestLinkCodeVectors(t *testing.T) {
	if *update {
		b, err := json.MarshalIndent(generateLinkCodeVectors(t), "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(linkCodeVectorFile, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(linkCodeVectorFile)
	if err != nil {
		t.Fatal(err)
	}
	var v linkCodeVectors
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Codes) == 0 || len(v.Equivalent) == 0 || len(v.Bad) == 0 {
		t.Fatal("empty link code vectors")
	}
	for _, c := range v.Codes {
		d, err := hex.DecodeString(c.Digest)
		if err != nil || len(d) != 10 {
			t.Fatalf("digest %q", c.Digest)
		}
		var want LinkCode
		copy(want[:], d)
		if want.String() != c.Code {
			t.Errorf("%s: text %s, want %s", c.Digest, want.String(), c.Code)
		}
		if got, err := ParseLinkCode(c.Code); err != nil || got != want {
			t.Errorf("ParseLinkCode(%s) = %x, %v", c.Code, got, err)
		}
		if c.Request == "" {
			continue
		}
		r, err := ParseLinkRequest([]byte(c.Request))
		if err != nil {
			t.Fatalf("request: %v", err)
		}
		if r.Code() != want {
			t.Errorf("request %s: code %s, want %s", c.Request, r.Code(), c.Code)
		}
	}
	for _, e := range v.Equivalent {
		got, err := ParseLinkCode(e.Text)
		if err != nil || got.String() != e.Code {
			t.Errorf("ParseLinkCode(%q) = %v, %v; want %s", e.Text, got, err, e.Code)
		}
	}
	for _, b := range v.Bad {
		if _, err := ParseLinkCode(b); !errors.Is(err, ErrBadLinkCode) {
			t.Errorf("ParseLinkCode(%q): %v, want ErrBadLinkCode", b, err)
		}
	}
	spec, err := os.ReadFile("../docs/spec/sigchain.md")
	if err != nil {
		t.Fatal(err)
	}
	// The worked example in the spec is the first vector.
	for _, s := range []string{v.Codes[0].Code, v.Codes[0].Digest, v.Codes[0].Request} {
		if !bytes.Contains(spec, []byte(s)) {
			t.Errorf("docs/spec/sigchain.md does not show %s", s)
		}
	}
}
