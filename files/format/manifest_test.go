package format

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/multiformats/go-multibase"
)

// Test identities of docs/spec/manifest.md: kez.FromSeed of 64 bytes of
// one value (see docs/spec/identity.md for the derivation).
const (
	seedOwner = 0x01
	seedBob   = 0x02
	seedCarol = 0x03
	seedDave  = 0x04
)

type cryptVector struct {
	Name       string `json:"name"`
	Key        string `json:"key"`
	PlainSize  int64  `json:"plain_size"`
	EncSize    int64  `json:"enc_size"`
	EncSHA256  string `json:"enc_sha256"`
	EncCID     string `json:"enc_cid"`
	FirstBytes string `json:"enc_first_32"`
}

type entryJSON struct {
	Name      string `json:"name"`
	Size      int64  `json:"size"`
	CID       string `json:"cid"`
	MediaType string `json:"media_type"`
	ModTime   int64  `json:"mtime"`
	Private   bool   `json:"private"`
	Key       string `json:"key,omitempty"`
	BlobSize  int64  `json:"blob_size"`
	Device    string `json:"device,omitempty"`
}

type manifestVector struct {
	Name     string                 `json:"name"`
	Body     string                 `json:"body"`
	Visible  map[string][]entryJSON `json:"visible,omitempty"` // by viewer seed name
	Sealed   int                    `json:"sealed_entries"`
	Comment  string                 `json:"comment,omitempty"`
	Valid    bool                   `json:"valid"`
	ErrorHas string                 `json:"error_contains,omitempty"`
}

type manifestVectors struct {
	Comment   string           `json:"comment"`
	Viewers   map[string]int   `json:"viewers"` // name -> seed byte
	Crypt     []cryptVector    `json:"encrypted_files"`
	Manifests []manifestVector `json:"manifests"`
}

const manifestVectorsPath = "testdata/manifest_vectors.json"

var viewerSeeds = map[string]int{"owner": seedOwner, "bob": seedBob, "carol": seedCarol, "dave": seedDave, "none": -1}

func viewer(t testing.TB, name string) *kez.Identity {
	s := viewerSeeds[name]
	if s < 0 {
		return nil
	}
	return testIdentity(t, byte(s))
}

func encryptBytes(t testing.TB, key FileKey, plain []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := Encrypt(&buf, bytes.NewReader(plain), key); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func vectorKey(i byte) FileKey {
	var k FileKey
	for j := range k {
		k[j] = i + byte(j)
	}
	return k
}

func toJSON(es []Entry) []entryJSON {
	out := []entryJSON{}
	for _, e := range es {
		j := entryJSON{Name: e.Name, Size: e.Size, CID: e.CID.String(), MediaType: e.MediaType,
			ModTime: e.ModTime.Unix(), Private: e.Private, BlobSize: e.BlobSize, Device: wireDevice(e.Device)}
		if e.Private {
			j.Key = hex.EncodeToString(e.Key[:])
		}
		out = append(out, j)
	}
	return out
}

func makeManifestVectors(t *testing.T) manifestVectors {
	v := manifestVectors{
		Comment: "KEZ shared-file manifests and encrypted files, see docs/spec/manifest.md. " +
			"Viewers are kez.FromSeed(64 bytes of the given value); plaintexts are the blob pattern (byte i is i mod 251).",
		Viewers: map[string]int{"owner": seedOwner, "bob": seedBob, "carol": seedCarol, "dave": seedDave},
	}
	for i, n := range []int64{0, 1, SegmentSize, SegmentSize + 1, 3*SegmentSize + 100} {
		key := vectorKey(byte(0x10 * (i + 1)))
		enc := encryptBytes(t, key, pattern(n))
		sum := sha256.Sum256(enc)
		v.Crypt = append(v.Crypt, cryptVector{
			Name: []string{"empty", "one_byte", "one_segment", "one_segment_plus_one", "four_segments"}[i],
			Key:  hex.EncodeToString(key[:]), PlainSize: n, EncSize: int64(len(enc)),
			EncSHA256: hex.EncodeToString(sum[:]), EncCID: treeOf(t, enc).CID().String(),
			FirstBytes: hex.EncodeToString(enc[:min(32, len(enc))]),
		})
	}
	mtime := time.Unix(1767225600, 0) // 2026-01-01
	pub := func(name string, size int64, media string) Entry {
		return Entry{Name: name, Size: size, CID: treeOf(t, pattern(size)).CID(), MediaType: media, ModTime: mtime}
	}
	var m1 Manifest
	must(t, m1.AddPublic(pub("report.pdf", 1000, "application/pdf")))
	must(t, m1.AddPublic(pub("notes — été.txt", 0, "")))
	add := func(m *Manifest, name string, ok bool, comment string) {
		b, err := m.Encode()
		if err != nil {
			t.Fatal(err)
		}
		mv := manifestVector{Name: name, Body: string(b), Valid: ok, Comment: comment,
			Sealed: len(m.Sealed), Visible: map[string][]entryJSON{}}
		for vn := range viewerSeeds {
			mv.Visible[vn] = toJSON(Visible(m, viewer(t, vn)))
		}
		v.Manifests = append(v.Manifests, mv)
	}
	add(&Manifest{}, "empty", true, "")
	add(&m1, "two_public", true, "")

	m2 := m1
	m2.Public = append([]Entry(nil), m1.Public...)
	secret := vectorKey(0x50)
	plain := int64(3*SegmentSize + 100)
	enc := encryptBytes(t, secret, pattern(plain))
	priv := Entry{Name: "salary 2026.xlsx", Size: plain, CID: treeOf(t, enc).CID(),
		MediaType: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", ModTime: mtime, Key: secret}
	must(t, m2.AddPrivate(priv, []Recipient{RecipientOf(viewer(t, "bob"), 0), RecipientOf(viewer(t, "carol"), 0)}))
	must(t, m2.AddPrivate(Entry{Name: "x", Size: 0, CID: treeOf(t, encryptBytes(t, vectorKey(0x60), nil)).CID(), ModTime: mtime,
		Key: vectorKey(0x60)}, []Recipient{RecipientOf(viewer(t, "owner"), 1)}))
	add(&m2, "public_and_private", true, "salary 2026.xlsx is sealed to bob and carol (generation 0), x to owner (generation 1)")

	// fail_*: each is a valid manifest with one thing broken.
	good, _ := m2.Encode()
	pubOnly, _ := m1.Encode()
	gs, ps := string(good), string(pubOnly)
	mut := func(name, comment, errHas, body string) {
		if body == gs || body == ps {
			t.Fatalf("%s: the mutation changed nothing", name)
		}
		v.Manifests = append(v.Manifests, manifestVector{Name: name, Body: body, Comment: comment, ErrorHas: errHas})
	}
	once := func(s, old, new string) string { return strings.Replace(s, old, new, 1) }
	firstCID := m1.Public[0].CID.String()
	mut("fail_empty", "no bytes", "EOF", "")
	mut("fail_not_an_object", "", "cannot unmarshal", "[]")
	mut("fail_version", "", "unknown version", once(ps, `"version":1`, `"version":3`))
	mut("fail_no_version", "", "unknown version", once(ps, `,"version":1`, ``))
	mut("fail_unknown_key", "", "unknown field", once(ps, `"version":1`, `"version":1,"x":1`))
	mut("fail_whitespace", "a space after a colon", "canonical", once(ps, `"version":1`, `"version": 1`))
	mut("fail_trailing_newline", "", "canonical", ps+"\n")
	mut("fail_key_order", "version first", "canonical", strings.TrimSuffix(once(ps, `{"private"`, `{"version":1,"private"`), `,"version":1}`)+"}")
	mut("fail_repeated_key", "version twice", "canonical", once(ps, `"version":1`, `"version":1,"version":1`))
	mut("fail_null_array", "private as null", "canonical", once(ps, `"private":[]`, `"private":null`))
	mut("fail_number_form", "size 1000 as 1e3", "cannot unmarshal number", once(ps, `"size":1000`, `"size":1e3`))
	mut("fail_escape_form", "a name letter escaped needlessly", "canonical", once(ps, `"name":"report.pdf"`, `"name":"\u0072eport.pdf"`))
	mut("fail_name_path", "", "a path", once(ps, `"name":"report.pdf"`, `"name":"../report.pdf"`))
	mut("fail_name_dotdot", "", "a path", once(ps, `"name":"report.pdf"`, `"name":".."`))
	mut("fail_name_control", "", "control character", once(ps, `"name":"report.pdf"`, `"name":"report\n.pdf"`))
	mut("fail_name_empty", "", "1 to 255 bytes", once(ps, `"name":"report.pdf"`, `"name":""`))
	mut("fail_duplicate_name", "", "two public entries", once(ps, `"name":"notes — été.txt"`, `"name":"report.pdf"`))
	mut("fail_media_type", "", "printable ASCII", once(ps, `"media_type":"application/pdf"`, `"media_type":"application/pdf\t"`))
	mut("fail_cid_codec", "a raw (0x55) CID", "CID", once(ps, firstCID, "bafkqaaa"))
	mut("fail_cid_other_base", "the same CID in base58btc", "canonical", once(ps, firstCID, mustBase58(t, m1.Public[0].CID)))
	mut("fail_size_too_big", "", "size", once(ps, `"size":1000`, `"size":1099511627777`))
	mut("fail_size_negative", "", "size", once(ps, `"size":1000`, `"size":-1`))
	mut("fail_mtime_too_big", "", "modification time", once(ps, `"mtime":1767225600`, `"mtime":9007199254740992`))
	mut("fail_blob_size", "one full segment and an empty final one", "blob size", once(gs, `"blob_size":196772`, `"blob_size":65568`))
	lw := strings.LastIndex(gs, `"wraps":[`) + len(`"wraps":[`)
	mut("fail_no_recipients", "the last entry's wraps emptied", "recipients", gs[:lw]+gs[lw+strings.Index(gs[lw:], "]"):])
	sealed := m2.Sealed[0].Wraps[0].Sealed
	st := b64.EncodeToString(sealed)
	mut("fail_wrap_length", "a wrap 3 bytes short", "wrap of", once(gs, st, st[:len(st)-4]))
	mut("fail_wrap_padded_base64", "", "base64url", once(gs, st, base64.URLEncoding.EncodeToString(sealed[:len(sealed)-1])))
	mut("fail_wrap_std_base64", "", "base64url", once(gs, st, "+"+st[1:]))

	// Entries served by devices other than the owner's key.
	dev5, dev6 := testIdentity(t, seedDevice5).PublicKey(), testIdentity(t, seedDevice6).PublicKey()
	m3 := Manifest{Public: append([]Entry(nil), m1.Public...), Sealed: []SealedEntry{m2.Sealed[1]}}
	m3.Public[0].Device = dev5
	m3.Sealed[0].Device = dev6
	add(&m3, "with_devices", true, "report.pdf is served by the device of seed 0x05, x (sealed to owner, generation 1) by that of 0x06")
	ds, _ := m3.Encode()
	dj := string(ds)
	d5 := `"device":"` + dev5.String() + `",`
	mut("fail_device_empty", "", "canonical", once(dj, d5, `"device":"",`))
	mut("fail_device_not_key", "a seed in place of the key", "device", once(dj, dev5.String(), "S"+dev5.String()[1:]))
	mut("fail_device_bad_checksum", "one character of the key changed", "device", once(dj, dev5.String(), dev5.String()[:20]+flipBase32(dev5.String()[20])+dev5.String()[21:]))
	cidField := `"cid":"` + m3.Public[0].CID.String() + `",`
	mut("fail_device_key_order", "device before cid", "canonical", once(dj, cidField+d5, d5+cidField))

	// A share to a group: no wraps, the group's ID, version 2.
	m4 := Manifest{Public: append([]Entry(nil), m1.Public...), Sealed: []SealedEntry{m2.Sealed[1]}}
	must(t, m4.AddGroup(Entry{Name: "salary 2026.xlsx", Size: plain, CID: priv.CID, ModTime: mtime, Device: dev5}, vectorGroup))
	add(&m4, "with_group", true, "x (sealed to owner, generation 1), and salary 2026.xlsx shared with the group "+
		"whose ID is 32 bytes of 0xc7, served by the device of seed 0x05: no one sees it in the manifest")
	gb, _ := m4.Encode()
	gj := string(gb)
	gid := hex.EncodeToString(vectorGroup[:])
	gf := `"group":"` + gid + `",`
	mut("fail_group_version_1", "a group entry in a version 1 manifest", "version 1 with group entries", once(gj, `"version":2`, `"version":1`))
	mut("fail_version_2_without_group", "version 2 and no group entry", "version 2 with group entries in 0", once(ps, `"version":1`, `"version":2`))
	mut("fail_group_with_wraps", "the group entry given the wraps of x", "has no wraps",
		once(gj, gf+`"wraps":[]`, gf+`"wraps":`+gj[strings.Index(gj, `"wraps":[{`)+len(`"wraps":`):strings.Index(gj, `}]`)+2]))
	mut("fail_group_upper_hex", "", "canonical", once(gj, gid, strings.ToUpper(gid)))
	mut("fail_group_zero", "", "group ID is zero", once(gj, gid, strings.Repeat("0", 64)))
	mut("fail_group_short", "63 hex digits", "not 64 hex digits", once(gj, gid, gid[1:]))
	mut("fail_group_empty", `"group":"" (no group: then version 2 is wrong)`, "version 2 with group entries in 0", once(gj, gf, `"group":"",`))
	mut("fail_group_key_order", "group before device", "canonical", once(gj, d5+gf, gf+d5))
	return v
}

// vectorGroup is the group ID of the with_group vectors.
var vectorGroup = [32]byte{0xc7, 0xc7, 0xc7, 0xc7, 0xc7, 0xc7, 0xc7, 0xc7, 0xc7, 0xc7, 0xc7, 0xc7, 0xc7, 0xc7, 0xc7, 0xc7,
	0xc7, 0xc7, 0xc7, 0xc7, 0xc7, 0xc7, 0xc7, 0xc7, 0xc7, 0xc7, 0xc7, 0xc7, 0xc7, 0xc7, 0xc7, 0xc7}

// Device keys of the with_devices vectors.
const (
	seedDevice5 = 0x05
	seedDevice6 = 0x06
)

// flipBase32 returns another base32 letter than c.
func flipBase32(c byte) string {
	if c == 'A' {
		return "B"
	}
	return "A"
}

func mustBase58(t *testing.T, c cid.Cid) string {
	s, err := c.StringOfBase(multibase.Base58BTC)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestManifestVectors(t *testing.T) {
	if *update {
		v := makeManifestVectors(t)
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(manifestVectorsPath, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := os.ReadFile(manifestVectorsPath)
	if err != nil {
		t.Fatal(err)
	}
	var v manifestVectors
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	spec, err := os.ReadFile("../../docs/spec/manifest.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, cv := range v.Crypt {
		t.Run("encrypt_"+cv.Name, func(t *testing.T) {
			var key FileKey
			kb, _ := hex.DecodeString(cv.Key)
			copy(key[:], kb)
			enc := encryptBytes(t, key, pattern(cv.PlainSize))
			sum := sha256.Sum256(enc)
			if hex.EncodeToString(sum[:]) != cv.EncSHA256 || int64(len(enc)) != cv.EncSize || EncryptedSize(cv.PlainSize) != cv.EncSize {
				t.Fatalf("encryption differs from the vector")
			}
			if c := treeOf(t, enc).CID().String(); c != cv.EncCID {
				t.Errorf("CID %s, want %s", c, cv.EncCID)
			}
			if !bytes.Contains(spec, []byte(cv.EncSHA256)) {
				t.Errorf("docs/spec/manifest.md does not list %s", cv.EncSHA256)
			}
			var out bytes.Buffer
			if _, err := Decrypt(&out, bytes.NewReader(enc), key); err != nil || !bytes.Equal(out.Bytes(), pattern(cv.PlainSize)) {
				t.Fatalf("decrypt: %v", err)
			}
			checkDecryptFailures(t, key, enc)
		})
	}
	for _, mv := range v.Manifests {
		t.Run(mv.Name, func(t *testing.T) {
			if strings.HasPrefix(mv.Name, "fail_") == mv.Valid {
				t.Fatalf("valid=%v disagrees with the name", mv.Valid)
			}
			b := []byte(mv.Body)
			m, err := DecodeManifest(b)
			if !mv.Valid {
				if !errors.Is(err, ErrManifest) || !strings.Contains(err.Error(), mv.ErrorHas) {
					t.Fatalf("err = %v, want ErrManifest containing %q", err, mv.ErrorHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			again, err := m.Encode()
			if err != nil || !bytes.Equal(again, b) {
				t.Fatalf("re-encoding differs: %v", err)
			}
			if len(m.Sealed) != mv.Sealed {
				t.Errorf("%d sealed entries, want %d", len(m.Sealed), mv.Sealed)
			}
			for vn, want := range mv.Visible {
				got := toJSON(Visible(m, viewer(t, vn)))
				gj, _ := json.Marshal(got)
				wj, _ := json.Marshal(want)
				if !bytes.Equal(gj, wj) {
					t.Errorf("visible to %s:\n got %s\nwant %s", vn, gj, wj)
				}
			}
		})
	}
}

// checkDecryptFailures applies the fail_* cases of docs/spec/manifest.md
// ("Encrypted files") to one encrypted file.
func checkDecryptFailures(t *testing.T, key FileKey, enc []byte) {
	t.Helper()
	dec := func(b []byte, k FileKey) error {
		_, err := Decrypt(&bytes.Buffer{}, bytes.NewReader(b), k)
		if err == nil {
			_, err = NewDecryptReader(bytes.NewReader(b), int64(len(b)), k)
		}
		return err
	}
	cases := map[string][]byte{}
	flip := append([]byte(nil), enc...)
	flip[len(flip)/2] ^= 1
	cases["fail_flipped_byte"] = flip
	cases["fail_truncated_by_one"] = enc[:len(enc)-1]
	cases["fail_empty_input"] = nil
	if len(enc) > EncSegmentSize {
		cases["fail_final_segment_dropped"] = enc[:EncSegmentSize]
		cases["fail_extended"] = append(append([]byte(nil), enc...), enc[:EncSegmentSize]...)
		sw := append([]byte(nil), enc[EncSegmentSize:min(2*EncSegmentSize, len(enc))]...)
		sw = append(sw, enc[:EncSegmentSize]...)
		sw = append(sw, enc[min(2*EncSegmentSize, len(enc)):]...)
		cases["fail_segments_swapped"] = sw
	}
	for name, b := range cases {
		if err := dec(b, key); !errors.Is(err, ErrDecrypt) {
			t.Errorf("%s: err = %v, want ErrDecrypt", name, err)
		}
	}
	wrong := key
	wrong[0] ^= 1
	if err := dec(enc, wrong); !errors.Is(err, ErrDecrypt) {
		t.Errorf("fail_wrong_key: err = %v", err)
	}
}

func TestDecryptReaderRanges(t *testing.T) {
	key := vectorKey(1)
	plain := pattern(5*SegmentSize + 333)
	enc := encryptBytes(t, key, plain)
	r, err := NewDecryptReader(bytes.NewReader(enc), int64(len(enc)), key)
	if err != nil {
		t.Fatal(err)
	}
	if r.Size() != int64(len(plain)) {
		t.Fatalf("size %d", r.Size())
	}
	for _, rg := range [][2]int{{0, 1}, {SegmentSize - 1, SegmentSize + 2}, {3 * SegmentSize, 5*SegmentSize + 333}, {7, 4*SegmentSize + 9}} {
		got := make([]byte, rg[1]-rg[0])
		if n, err := r.ReadAt(got, int64(rg[0])); n != len(got) || err != nil && err != io.EOF {
			t.Fatalf("ReadAt %v: %d, %v", rg, n, err)
		}
		if !bytes.Equal(got, plain[rg[0]:rg[1]]) {
			t.Fatalf("ReadAt %v: wrong bytes", rg)
		}
	}
}

func TestManifestBuildRules(t *testing.T) {
	c := treeOf(t, []byte("x")).CID()
	var m Manifest
	for _, name := range []string{"", ".", "..", "a/b", `a\b`, "a\x00b", strings.Repeat("a", 256), "\xff"} {
		if err := m.AddPublic(Entry{Name: name, CID: c}); !errors.Is(err, ErrManifest) {
			t.Errorf("name %q accepted: %v", name, err)
		}
	}
	if err := m.AddPublic(Entry{Name: "ok", CID: c, MediaType: "text/plain\n"}); !errors.Is(err, ErrManifest) {
		t.Error("bad media type accepted")
	}
	if err := m.AddPublic(Entry{Name: "ok", CID: c, Size: -1}); !errors.Is(err, ErrManifest) {
		t.Error("negative size accepted")
	}
	must(t, m.AddPublic(Entry{Name: "ok", CID: c}))
	if err := m.AddPublic(Entry{Name: "ok", CID: c}); !errors.Is(err, ErrManifest) {
		t.Error("duplicate name accepted")
	}
	if err := m.AddPrivate(Entry{Name: "p", CID: c, Key: vectorKey(1)}, nil); !errors.Is(err, ErrManifest) {
		t.Error("private entry without recipients accepted")
	}
	bob := RecipientOf(testIdentity(t, seedBob), 0)
	if err := m.AddPrivate(Entry{Name: "p", CID: c}, []Recipient{bob}); !errors.Is(err, ErrManifest) {
		t.Error("private entry without a file key accepted")
	}
	bob.Generation = maxGeneration
	if err := m.AddPrivate(Entry{Name: "p", CID: c, Key: vectorKey(1)}, []Recipient{bob}); !errors.Is(err, ErrManifest) {
		t.Error("key generation over the limit accepted")
	}
	if !m.Remove(c) || len(m.Public) != 0 {
		t.Error("Remove")
	}
	// Limits: entries, then bytes.
	var big Manifest
	for i := 0; i < MaxEntries; i++ {
		must(t, big.AddPublic(Entry{Name: fmt.Sprintf("%03x", i), CID: c, ModTime: time.Unix(0, 0)}))
	}
	if err := big.AddPublic(Entry{Name: "one more", CID: c}); !errors.Is(err, ErrManifest) {
		t.Error("entry over the limit accepted")
	}
	b, err := big.Encode()
	if err != nil {
		t.Fatalf("%d small entries do not encode: %v", MaxEntries, err)
	}
	if _, err := DecodeManifest(b); err != nil {
		t.Fatal(err)
	}
	var wide Manifest
	for i := 0; len(wide.Public) < MaxEntries; i++ {
		must(t, wide.AddPublic(Entry{Name: fmt.Sprintf("%0200d", i), CID: c}))
	}
	if _, err := wide.Encode(); !errors.Is(err, ErrManifest) {
		t.Errorf("a manifest over %d bytes encoded: %v", MaxManifestSize, err)
	}
	if _, err := DecodeManifest(make([]byte, MaxManifestSize+1)); !errors.Is(err, ErrManifest) {
		t.Error("an oversized input was accepted")
	}
}

// TestVisiblePrivacy: a private entry's name appears nowhere in the
// encoding, and only recipients see it.
func TestVisiblePrivacy(t *testing.T) {
	bob, dave := testIdentity(t, seedBob), testIdentity(t, seedDave)
	key := vectorKey(9)
	enc := encryptBytes(t, key, []byte("secret plans"))
	var m Manifest
	must(t, m.AddPrivate(Entry{Name: "secret-plans.txt", Size: 12, CID: treeOf(t, enc).CID(), MediaType: "text/plain", Key: key},
		[]Recipient{RecipientOf(bob, 0)}))
	b, err := m.Encode()
	must(t, err)
	if bytes.Contains(b, []byte("secret-plans")) || bytes.Contains(b, []byte("text/plain")) || bytes.Contains(b, key[:8]) {
		t.Fatal("the encoding leaks the private entry")
	}
	m2, err := DecodeManifest(b)
	must(t, err)
	if got := Visible(m2, dave); len(got) != 0 {
		t.Fatalf("dave sees %v", got)
	}
	got := Visible(m2, bob)
	if len(got) != 1 || got[0].Name != "secret-plans.txt" || got[0].Key != key || !got[0].Private {
		t.Fatalf("bob sees %+v", got)
	}
	// A wrap moved to another entry does not open there (the AAD binds it).
	other := treeOf(t, encryptBytes(t, key, []byte("other file!!"))).CID()
	m2.Sealed[0].CID = other
	if got := Visible(m2, bob); len(got) != 0 {
		t.Fatalf("a transplanted wrap opened: %+v", got)
	}
	// A wrap to bob's generation 1 key does not open with generation 0.
	var m3 Manifest
	r := RecipientOf(bob, 0)
	r.Generation = 1
	must(t, m3.AddPrivate(Entry{Name: "n", Size: 12, CID: treeOf(t, enc).CID(), Key: key}, []Recipient{r}))
	if got := Visible(&m3, bob); len(got) != 0 {
		t.Fatal("a wrap opened with the wrong generation's key")
	}
}

func FuzzDecodeManifest(f *testing.F) {
	raw, err := os.ReadFile(manifestVectorsPath)
	if err != nil {
		f.Fatal(err)
	}
	var v manifestVectors
	if err := json.Unmarshal(raw, &v); err != nil {
		f.Fatal(err)
	}
	for _, mv := range v.Manifests {
		f.Add([]byte(mv.Body))
	}
	bob := testIdentity(f, seedBob)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeManifest(b)
		if err != nil {
			if !errors.Is(err, ErrManifest) {
				t.Fatalf("error does not wrap ErrManifest: %v", err)
			}
			return
		}
		again, err := m.Encode()
		if err != nil {
			t.Fatalf("decoded manifest does not encode: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("not canonical:\n in %x\nout %x", b, again)
		}
		Visible(m, bob)
	})
}
