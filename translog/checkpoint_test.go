package translog_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/kez-lat/kez-chat/internal/testenv/tlogtest"
	"github.com/kez-lat/kez-chat/translog"
)

const origin = tlogtest.DefaultOrigin

// signText signs text with the key of seed named name.
func signText(t testing.TB, seed, name, text string) []byte {
	t.Helper()
	skey, _ := tlogtest.NoteKey(seed, name)
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	n, err := note.Sign(&note.Note{Text: text}, s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func cpText(origin string, size uint64, root []byte) string {
	return fmt.Sprintf("%s\n%d\n%s\n", origin, size, base64.StdEncoding.EncodeToString(root))
}

func TestParseCheckpoint(t *testing.T) {
	_, vkey := tlogtest.NoteKey("k", origin)
	root := bytes.Repeat([]byte{7}, 32)
	good := signText(t, "k", origin, cpText(origin, 5, root))
	cp, err := translog.ParseCheckpoint(good, vkey)
	if err != nil {
		t.Fatal(err)
	}
	if cp.Origin != origin || cp.Size != 5 || !bytes.Equal(cp.Root[:], root) || !bytes.Equal(cp.Note, good) {
		t.Fatalf("%+v", cp)
	}

	// A cosignature by another key does not matter.
	skey2, _ := tlogtest.NoteKey("witness", "witness.test")
	w, _ := note.NewSigner(skey2)
	n, _ := note.Open(good, note.VerifierList(mustVerifier(t, vkey)))
	cosigned, err := note.Sign(n, w)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := translog.ParseCheckpoint(cosigned, vkey); err != nil {
		t.Errorf("cosigned: %v", err)
	}

	// The same tree size 0 with the empty root is fine.
	empty := signText(t, "k", origin, "sig.test/sigchain-log\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n")
	if _, err := translog.ParseCheckpoint(empty, vkey); err != nil {
		t.Errorf("empty tree: %v", err)
	}

	nonCanonRoot := base64.StdEncoding.EncodeToString(root)
	nonCanonRoot = nonCanonRoot[:42] + "9=" // the last character carries non-zero unused bits
	for name, in := range map[string][]byte{
		"other key":            signText(t, "other", origin, cpText(origin, 5, root)),
		"origin is not name":   signText(t, "k", origin, cpText("other.test/log", 5, root)),
		"extension line":       signText(t, "k", origin, cpText(origin, 5, root)+"ext\n"),
		"leading zero":         signText(t, "k", origin, origin+"\n05\n"+base64.StdEncoding.EncodeToString(root)+"\n"),
		"signed size":          signText(t, "k", origin, origin+"\n+5\n"+base64.StdEncoding.EncodeToString(root)+"\n"),
		"short root":           signText(t, "k", origin, cpText(origin, 5, root[:31])),
		"long root":            signText(t, "k", origin, cpText(origin, 5, append(root, 1))),
		"non-canonical base64": signText(t, "k", origin, origin+"\n5\n"+nonCanonRoot+"\n"),
		"empty tree, a root":   signText(t, "k", origin, cpText(origin, 0, root)),
		"two lines":            signText(t, "k", origin, origin+"\n5\n"),
		"unsigned":             []byte(cpText(origin, 5, root) + "\n"),
		"tampered":             bytes.Replace(good, []byte("\n5\n"), []byte("\n6\n"), 1),
		"huge":                 signText(t, "k", origin, cpText(origin, 5, root)+strings.Repeat("x", 5000)+"\n"),
	} {
		if _, err := translog.ParseCheckpoint(in, vkey); !errors.Is(err, translog.ErrBadCheckpoint) {
			t.Errorf("%s: %v, want ErrBadCheckpoint", name, err)
		}
	}
	if _, err := translog.ParseCheckpoint(good, "not a key"); !errors.Is(err, translog.ErrBadCheckpoint) {
		t.Errorf("bad vkey: %v", err)
	}
}

func mustVerifier(t testing.TB, vkey string) note.Verifier {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func FuzzParseCheckpoint(f *testing.F) {
	_, vkey := tlogtest.NoteKey("k", origin)
	root := bytes.Repeat([]byte{7}, 32)
	good := signText(f, "k", origin, cpText(origin, 5, root))
	f.Add(good)
	f.Add(signText(f, "k", origin, cpText(origin, 0, root)))
	f.Add(signText(f, "k", origin, cpText(origin, 5, root)+"ext\n"))
	f.Add(signText(f, "other", origin, cpText(origin, 5, root)))
	f.Add([]byte(cpText(origin, 5, root)))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		cp, err := translog.ParseCheckpoint(b, vkey)
		if err != nil {
			if !errors.Is(err, translog.ErrBadCheckpoint) {
				t.Fatalf("error %v is not ErrBadCheckpoint", err)
			}
			return
		}
		if cp.Origin != origin || !bytes.Equal(cp.Note, b) {
			t.Fatalf("accepted %+v", cp)
		}
		if !bytes.HasPrefix(b, []byte(cpText(cp.Origin, cp.Size, cp.Root[:])+"\n")) {
			t.Fatalf("accepted a non-canonical text %q", b)
		}
	})
}
