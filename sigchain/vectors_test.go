package sigchain

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors from the generator")

const vectorDir = "testdata/vectors"

// vector is one test vector file. Each entry of Links is the link's exact
// bytes: a JSON object as written in the file, or a string of hex for bytes
// that are not JSON.
type vector struct {
	Name        string            `json:"name"`
	Description string            `json:"description"`
	Now         int64             `json:"now"`
	Links       []json.RawMessage `json:"links"`
	Expect      *vectorState      `json:"expect,omitempty"`
	Error       string            `json:"error,omitempty"`
}

type vectorState struct {
	Key                  string          `json:"key"`
	Seqno                uint64          `json:"seqno"`
	Head                 string          `json:"head"`
	Handle               string          `json:"handle"`
	EncryptionKey        string          `json:"encryption_key"`
	EncryptionGeneration uint32          `json:"encryption_generation"`
	Claims               []vectorClaim   `json:"claims"`
	SharedFiles          json.RawMessage `json:"shared_files"`
	SharedFilesSeqno     uint64          `json:"shared_files_seqno"`
	Devices              []vectorDevice  `json:"devices"`
}

// vectorDevice is one entry of State.Devices: every device the chain ever
// had, the primary first.
type vectorDevice struct {
	Key          string `json:"key"`
	Name         string `json:"name"`
	Primary      bool   `json:"primary"`
	AddedSeqno   uint64 `json:"added_seqno"`
	RevokedSeqno uint64 `json:"revoked_seqno"`
}

type vectorClaim struct {
	ID       string `json:"id"`
	Service  string `json:"service"`
	Identity string `json:"identity"`
	Proof    string `json:"proof"`
}

// errorKinds maps a fail vector's "error" to the sentinel it must match.
var errorKinds = map[string]error{
	"malformed":      ErrMalformed,
	"too_large":      ErrTooLarge,
	"bad_signature":  ErrBadSignature,
	"broken_chain":   ErrBrokenChain,
	"wrong_key":      ErrWrongKey,
	"bad_ctime":      ErrBadCtime,
	"bad_body":       ErrBadBody,
	"unsupported":    ErrUnsupported,
	"invalid":        ErrInvalid,
	"malformed_body": ErrMalformed,
}

func (v *vector) linkBytes(t *testing.T) [][]byte {
	var out [][]byte
	for i, raw := range v.Links {
		if len(raw) > 0 && raw[0] == '"' {
			var h string
			if err := json.Unmarshal(raw, &h); err != nil {
				t.Fatalf("%s: link %d: %v", v.Name, i, err)
			}
			b, err := hex.DecodeString(h)
			if err != nil {
				t.Fatalf("%s: link %d: %v", v.Name, i, err)
			}
			out = append(out, b)
			continue
		}
		out = append(out, []byte(raw))
	}
	return out
}

// run parses and verifies the vector's links.
func (v *vector) run(t *testing.T) (*State, error) {
	var links []*Link
	for _, b := range v.linkBytes(t) {
		l, err := ParseLink(b)
		if err != nil {
			return nil, err
		}
		links = append(links, l)
	}
	return Verify(links, fixedClock(v.Now))
}

func stateOf(s *State) *vectorState {
	vs := &vectorState{
		Key: s.Key().String(), Seqno: s.Seqno(), Head: s.Head().String(), Handle: s.Handle(),
		EncryptionKey:        b64.EncodeToString(s.EncryptionKey().Bytes()),
		EncryptionGeneration: s.EncryptionGeneration(),
		Claims:               []vectorClaim{},
		SharedFiles:          json.RawMessage("null"),
		SharedFilesSeqno:     s.SharedFilesSeqno(),
	}
	for _, c := range s.Claims() {
		vs.Claims = append(vs.Claims, vectorClaim{c.ID.String(), c.Service, c.Identity, c.Proof})
	}
	for _, d := range s.Devices() {
		vs.Devices = append(vs.Devices, vectorDevice{d.Key.String(), d.Name, d.Primary, d.AddedSeqno, d.RevokedSeqno})
	}
	if sf := s.SharedFiles(); sf != nil {
		vs.SharedFiles = sf
	}
	return vs
}

func TestVectors(t *testing.T) {
	if *update {
		writeVectors(t, generateVectors(t))
	}
	files, err := filepath.Glob(filepath.Join(vectorDir, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no vectors in %s: %v", vectorDir, err)
	}
	spec, err := os.ReadFile("../docs/spec/sigchain.md")
	if err != nil {
		t.Fatal(err)
	}
	var valid, fail int
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var v vector
		if err := json.Unmarshal(data, &v); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if v.Name+".json" != filepath.Base(f) {
			t.Errorf("%s: name %q does not match the file name", f, v.Name)
		}
		if !bytes.Contains(spec, []byte("`"+v.Name+"`")) {
			t.Errorf("docs/spec/sigchain.md does not name vector %s", v.Name)
		}
		t.Run(v.Name, func(t *testing.T) {
			st, err := v.run(t)
			switch {
			case strings.HasPrefix(v.Name, "valid_"):
				valid++
				if err != nil {
					t.Fatalf("valid vector rejected: %v", err)
				}
				if v.Expect == nil {
					t.Fatal("valid vector has no expect")
				}
				got, _ := json.Marshal(stateOf(st))
				want, _ := json.Marshal(v.Expect)
				if !bytes.Equal(got, want) {
					t.Fatalf("state:\n got %s\nwant %s", got, want)
				}
			case strings.HasPrefix(v.Name, "fail_"):
				fail++
				if err == nil {
					t.Fatal("fail vector accepted")
				}
				kind, ok := errorKinds[v.Error]
				if !ok {
					t.Fatalf("unknown error kind %q", v.Error)
				}
				if !errors.Is(err, kind) {
					t.Fatalf("error %q does not match %s", err, v.Error)
				}
				t.Logf("rejected as expected: %v", err)
			default:
				t.Fatalf("vector names start with valid_ or fail_")
			}
		})
	}
	if valid == 0 || fail == 0 {
		t.Fatalf("%d valid and %d fail vectors; want some of each", valid, fail)
	}
}

// writeVectors writes each vector with its links' exact bytes, one a line.
func writeVectors(t *testing.T, vs []*vector) {
	if err := os.MkdirAll(vectorDir, 0o755); err != nil {
		t.Fatal(err)
	}
	old, _ := filepath.Glob(filepath.Join(vectorDir, "*.json"))
	for _, f := range old {
		os.Remove(f)
	}
	for _, v := range vs {
		var b bytes.Buffer
		q := func(s string) string { j, _ := json.Marshal(s); return string(j) }
		b.WriteString("{\n")
		b.WriteString(`  "name": ` + q(v.Name) + ",\n")
		b.WriteString(`  "description": ` + q(v.Description) + ",\n")
		b.WriteString(`  "now": ` + strconv.FormatInt(v.Now, 10) + ",\n")
		b.WriteString(`  "links": [`)
		for i, l := range v.Links {
			if i > 0 {
				b.WriteString(",")
			}
			b.WriteString("\n    ")
			b.Write(l)
		}
		if len(v.Links) > 0 {
			b.WriteString("\n  ")
		}
		b.WriteString("]")
		if v.Expect != nil {
			e, err := json.MarshalIndent(v.Expect, "  ", "  ")
			if err != nil {
				t.Fatal(err)
			}
			b.WriteString(",\n  \"expect\": ")
			b.Write(e)
		}
		if v.Error != "" {
			b.WriteString(",\n  \"error\": " + q(v.Error))
		}
		b.WriteString("\n}\n")
		if !json.Valid(b.Bytes()) && !slices.ContainsFunc(v.Links, func(r json.RawMessage) bool { return !json.Valid(r) }) {
			t.Fatalf("%s: generated invalid JSON", v.Name)
		}
		if err := os.WriteFile(filepath.Join(vectorDir, v.Name+".json"), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
