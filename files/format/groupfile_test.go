package format

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

// The group file offer of docs/spec/manifest.md §7: vectors a reader can
// check, every rule broken once, and a fuzz target.

type groupFileVector struct {
	Name      string `json:"name"`
	Comment   string `json:"comment,omitempty"`
	Body      string `json:"body"` // hex
	Valid     bool   `json:"valid"`
	ErrorHas  string `json:"error_contains,omitempty"`
	Group     string `json:"group,omitempty"`
	Owner     string `json:"owner,omitempty"`
	CID       string `json:"cid,omitempty"`
	Key       string `json:"key,omitempty"`
	FileName  string `json:"file_name,omitempty"`
	Size      int64  `json:"size,omitempty"`
	MediaType string `json:"media_type,omitempty"`
	MTime     int64  `json:"mtime,omitempty"`
}

type groupFileVectors struct {
	Comment string            `json:"comment"`
	Offers  []groupFileVector `json:"offers"`
}

const groupFileVectorsPath = "testdata/group_file_vectors.json"

// vectorOffer is the valid offer of the vectors: the four_segments file
// of the manifest vectors (key 0x50), shared by the owner (seed 0x01)
// with the group of the with_group manifest vector.
func vectorOffer(t testing.TB) *GroupFile {
	key := vectorKey(0x50)
	plain := int64(3*SegmentSize + 100)
	return &GroupFile{
		Group: vectorGroup, Owner: testIdentity(t, seedOwner).PublicKey(),
		CID: treeOf(t, encryptBytes(t, key, pattern(plain))).CID(), Key: key,
		Name: "salary 2026.xlsx", Size: plain, MediaType: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
		ModTime: time.Unix(1767225600, 0),
	}
}

func makeGroupFileVectors(t *testing.T) groupFileVectors {
	f := vectorOffer(t)
	good, err := f.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	v := groupFileVectors{
		Comment: "KEZ group file offers (the body of a group-file message), see docs/spec/manifest.md §7. " +
			"The owner is kez.FromSeed(64 bytes of 0x01); the file is the four_segments one of manifest_vectors.json.",
		Offers: []groupFileVector{{
			Name: "offer", Body: hex.EncodeToString(good), Valid: true, Group: hex.EncodeToString(f.Group[:]),
			Owner: f.Owner.String(), CID: f.CID.String(), Key: hex.EncodeToString(f.Key[:]), FileName: f.Name,
			Size: f.Size, MediaType: f.MediaType, MTime: f.ModTime.Unix(),
		}},
	}
	// Offsets in the valid body.
	cl := int(good[65])
	keyAt := 66 + cl
	sizeAt := keyAt + 32
	mtimeAt := sizeAt + 8
	nameAt := mtimeAt + 8
	mediaAt := nameAt + 1 + int(good[nameAt])
	with := func(at int, b ...byte) []byte {
		out := bytes.Clone(good)
		copy(out[at:], b)
		return out
	}
	fail := func(name, comment, errHas string, body []byte) {
		if bytes.Equal(body, good) {
			t.Fatalf("%s: the mutation changed nothing", name)
		}
		v.Offers = append(v.Offers, groupFileVector{Name: name, Comment: comment, Body: hex.EncodeToString(body), ErrorHas: errHas})
	}
	u64 := func(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }
	fail("fail_empty", "", "0 bytes", nil)
	fail("fail_truncated", "the last byte dropped", "truncated", good[:len(good)-1])
	fail("fail_trailing_byte", "", "after the media type", append(bytes.Clone(good), 0))
	fail("fail_version", "", "unknown version", with(0, 2))
	fail("fail_group_zero", "", "group ID is zero", with(1, make([]byte, 32)...))
	fail("fail_owner_zero", "", "no owner", with(33, make([]byte, 32)...))
	fail("fail_cid_len_zero", "", "a CID of 0 bytes", with(65, 0))
	fail("fail_cid_len_too_long", "", "a CID of 65 bytes", with(65, 65))
	fail("fail_cid_codec", "the CID's codec byte made raw (0x55)", "CID", with(67, 0x55))
	fail("fail_key_zero", "", "file key is zero", with(keyAt, make([]byte, 32)...))
	fail("fail_size_too_big", "2^40 + 1", "size", with(sizeAt, u64(1<<40+1)...))
	fail("fail_mtime_too_big", "2^53", "modification time", with(mtimeAt, u64(1<<53)...))
	fail("fail_name_path", "a '/' in the name", "a path", with(nameAt+1, '/'))
	fail("fail_name_empty", "name_len 0: the name's bytes are read as the media type", "", with(nameAt, 0))
	fail("fail_media_type", "a tab in the media type", "printable ASCII", with(mediaAt+1, '\t'))
	return v
}

func TestGroupFileVectors(t *testing.T) {
	if *update {
		b, err := json.MarshalIndent(makeGroupFileVectors(t), "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(groupFileVectorsPath, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var v groupFileVectors
	raw, err := os.ReadFile(groupFileVectorsPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	spec, err := os.ReadFile("../../docs/spec/manifest.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, gv := range v.Offers {
		t.Run(gv.Name, func(t *testing.T) {
			if strings.HasPrefix(gv.Name, "fail_") == gv.Valid {
				t.Fatalf("valid=%v disagrees with the name", gv.Valid)
			}
			if !bytes.Contains(spec, []byte("`"+gv.Name+"`")) {
				t.Errorf("docs/spec/manifest.md does not name the vector %s", gv.Name)
			}
			body, err := hex.DecodeString(gv.Body)
			if err != nil {
				t.Fatal(err)
			}
			f, err := ParseGroupFile(body)
			if !gv.Valid {
				if !errors.Is(err, ErrGroupFile) || !strings.Contains(err.Error(), gv.ErrorHas) {
					t.Fatalf("err = %v, want ErrGroupFile containing %q", err, gv.ErrorHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if hex.EncodeToString(f.Group[:]) != gv.Group || f.Owner.String() != gv.Owner || f.CID.String() != gv.CID ||
				hex.EncodeToString(f.Key[:]) != gv.Key || f.Name != gv.FileName || f.Size != gv.Size ||
				f.MediaType != gv.MediaType || f.ModTime.Unix() != gv.MTime {
				t.Fatalf("parsed %+v", f)
			}
			again, err := f.MarshalBinary()
			if err != nil || !bytes.Equal(again, body) {
				t.Fatalf("re-encoding differs: %v", err)
			}
			if e := f.Entry(); !e.Private || e.BlobSize != EncryptedSize(gv.Size) || e.Key != f.Key || e.Name != gv.FileName {
				t.Fatalf("entry %+v", e)
			}
		})
	}
}

// What MarshalBinary refuses: an offer that would not parse.
func TestGroupFileMarshalRules(t *testing.T) {
	for name, change := range map[string]func(f *GroupFile){
		"no group":        func(f *GroupFile) { f.Group = [32]byte{} },
		"no owner":        func(f *GroupFile) { f.Owner = [32]byte{} },
		"no key":          func(f *GroupFile) { f.Key = FileKey{} },
		"a path":          func(f *GroupFile) { f.Name = "a/b" },
		"a long name":     func(f *GroupFile) { f.Name = strings.Repeat("n", MaxNameLen+1) },
		"a control char":  func(f *GroupFile) { f.MediaType = "text/plain\n" },
		"a negative size": func(f *GroupFile) { f.Size = -1 },
		"a huge size":     func(f *GroupFile) { f.Size = MaxBlobSize + 1 },
	} {
		f := vectorOffer(t)
		change(f)
		if _, err := f.MarshalBinary(); !errors.Is(err, ErrGroupFile) {
			t.Errorf("%s: err = %v, want ErrGroupFile", name, err)
		}
	}
	// The longest offer fits MaxGroupFileLen and parses.
	f := vectorOffer(t)
	f.Name, f.MediaType = strings.Repeat("n", MaxNameLen), strings.Repeat("m", MaxMediaTypeLen)
	b, err := f.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > MaxGroupFileLen {
		t.Fatalf("%d bytes, over MaxGroupFileLen %d", len(b), MaxGroupFileLen)
	}
	if _, err := ParseGroupFile(b); err != nil {
		t.Fatal(err)
	}
}

// A manifest entry shared with a group: AddGroup's rules, and the entry
// found again by GroupEntry, invisible to every viewer.
func TestManifestAddGroup(t *testing.T) {
	f := vectorOffer(t)
	var m Manifest
	if err := m.AddGroup(f.Entry(), [32]byte{}); !errors.Is(err, ErrManifest) {
		t.Fatalf("a zero group ID: %v", err)
	}
	bad := f.Entry()
	bad.Name = ".."
	if err := m.AddGroup(bad, vectorGroup); !errors.Is(err, ErrManifest) {
		t.Fatalf("a bad name: %v", err)
	}
	must(t, m.AddGroup(f.Entry(), vectorGroup))
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(`"group":"`+hex.EncodeToString(vectorGroup[:])+`","wraps":[]`)) || !bytes.HasSuffix(b, []byte(`"version":2}`)) {
		t.Fatalf("encoded %s", b)
	}
	m2, err := DecodeManifest(b)
	if err != nil {
		t.Fatal(err)
	}
	se, ok := m2.GroupEntry(f.CID)
	if !ok || se.Group != vectorGroup || se.BlobSize != EncryptedSize(f.Size) {
		t.Fatalf("GroupEntry: %+v, %v", se, ok)
	}
	for _, seed := range []byte{seedOwner, seedBob} {
		if got := Visible(m2, testIdentity(t, seed)); len(got) != 0 {
			t.Fatalf("viewer %d sees %+v", seed, got)
		}
	}
	if !m2.Remove(f.CID) {
		t.Fatal("Remove did not find the group entry")
	}
	if b, _ := m2.Encode(); !bytes.HasSuffix(b, []byte(`"version":1}`)) {
		t.Fatalf("without its group entry the manifest is %s", b)
	}
}

func FuzzParseGroupFile(f *testing.F) {
	raw, err := os.ReadFile(groupFileVectorsPath)
	if err != nil {
		f.Fatal(err)
	}
	var v groupFileVectors
	if err := json.Unmarshal(raw, &v); err != nil {
		f.Fatal(err)
	}
	for _, gv := range v.Offers {
		b, _ := hex.DecodeString(gv.Body)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		g, err := ParseGroupFile(b)
		if err != nil {
			if !errors.Is(err, ErrGroupFile) {
				t.Fatalf("error does not wrap ErrGroupFile: %v", err)
			}
			return
		}
		again, err := g.MarshalBinary()
		if err != nil {
			t.Fatalf("a parsed offer does not encode: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("not canonical:\n in %x\nout %x", b, again)
		}
		if e := g.Entry(); checkEntryFields(&e) != nil {
			t.Fatalf("a parsed offer's entry breaks the rules: %+v", e)
		}
	})
}
