package chat

import (
	"bytes"
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/kez-lat/kez-chat/sigchain"
)

// testNote is a checkpoint as a sig-server signs it (the parser does not
// verify it: the receiver does, with the log's pinned key).
const testNote = "kez.test/sigchain-log\n3\nq5Mh2QxEWJEbB/8vq9bl8xfbdhdkM6SkNqQx/vT/gHU=\n\n\u2014 kez.test/sigchain-log Tx6ue0BTn6skAojQkxBpMHlL2WQQ/dYjjf2Nf8dn5B99vRUGb8xnEukxoYhc2skxsGAwUwsUsvD9cGcqmU5Ob1fW7gA=\n"

func testLogView(t testing.TB) logView {
	head, err := sigchain.ParseID(testHead)
	if err != nil {
		t.Fatal(err)
	}
	return logView{Checkpoints: [][]byte{[]byte(testNote)}, HeadSeqno: 3, Head: head}
}

func TestLogViewBody(t *testing.T) {
	v := testLogView(t)
	body := marshalLogView(v)
	want := `{"checkpoints":["kez.test/sigchain-log\n3\nq5Mh2QxEWJEbB/8vq9bl8xfbdhdkM6SkNqQx/vT/gHU=\n\n` + "\u2014" + ` kez.test/sigchain-log Tx6ue0BTn6skAojQkxBpMHlL2WQQ/dYjjf2Nf8dn5B99vRUGb8xnEukxoYhc2skxsGAwUwsUsvD9cGcqmU5Ob1fW7gA=\n"],"head":{"id":"` + testHead + `","seqno":3}}`
	if string(body) != want {
		t.Fatalf("body\n%s\nwant\n%s", body, want)
	}
	if _, err := sigchain.Canonicalize(body); err != nil {
		t.Fatal(err)
	}
	if c, _ := sigchain.Canonicalize(body); !bytes.Equal(c, body) {
		t.Fatalf("the body is not canonical JSON:\n%s\n%s", body, c)
	}
	got, err := parseLogView(body)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Checkpoints) != 1 || string(got.Checkpoints[0]) != testNote || got.HeadSeqno != 3 || got.Head != v.Head {
		t.Fatalf("parsed %+v", got)
	}
	empty := marshalLogView(logView{HeadSeqno: 1, Head: v.Head})
	if _, err := parseLogView(empty); err != nil {
		t.Fatalf("a view without checkpoints: %v", err)
	}
}

// TestLogViewBodyRefused feeds the parser what a hostile contact could
// send: every body but the canonical form within the caps is refused
// with ErrMalformed.
func TestLogViewBodyRefused(t *testing.T) {
	v := testLogView(t)
	note := func(n string) string { return string(canonicalString(n)) }
	head := `"head":{"id":"` + testHead + `","seqno":3}`
	five := strings.Repeat(note("a")+",", 4) + note("b")
	distinct5 := note("a") + "," + note("b") + "," + note("c") + "," + note("d") + "," + note("e")
	for name, body := range map[string]string{
		"empty":               ``,
		"not an object":       `[]`,
		"no head":             `{"checkpoints":[]}`,
		"no checkpoints":      `{` + head + `}`,
		"null checkpoints":    `{"checkpoints":null,` + head + `}`,
		"extra field":         `{"checkpoints":[],` + head + `,"x":1}`,
		"extra head field":    `{"checkpoints":[],"head":{"id":"` + testHead + `","seqno":3,"x":1}}`,
		"seqno 0":             `{"checkpoints":[],"head":{"id":"` + testHead + `","seqno":0}}`,
		"seqno too big":       `{"checkpoints":[],"head":{"id":"` + testHead + `","seqno":9007199254740992}}`,
		"negative seqno":      `{"checkpoints":[],"head":{"id":"` + testHead + `","seqno":-1}}`,
		"fraction":            `{"checkpoints":[],"head":{"id":"` + testHead + `","seqno":3.0}}`,
		"head no ID":          `{"checkpoints":[],"head":{"id":"hello","seqno":3}}`,
		"head upper case":     `{"checkpoints":[],"head":{"id":"` + strings.ToUpper(testHead) + `","seqno":3}}`,
		"empty note":          `{"checkpoints":[""],` + head + `}`,
		"long note":           `{"checkpoints":[` + note(strings.Repeat("a", maxLogViewNoteSize+1)) + `],` + head + `}`,
		"five notes":          `{"checkpoints":[` + distinct5 + `],` + head + `}`,
		"repeated note":       `{"checkpoints":[` + five + `],` + head + `}`,
		"repeated note twice": `{"checkpoints":[` + note("a") + `,` + note("a") + `],` + head + `}`,
		"not a string":        `{"checkpoints":[1],` + head + `}`,
		"spaces":              `{"checkpoints": [],` + head + `}`,
		"keys out of order":   `{` + head + `,"checkpoints":[]}`,
		"duplicate key":       `{"checkpoints":[],"checkpoints":[],` + head + `}`,
		"escaped slash":       `{"checkpoints":["a\/b"],` + head + `}`,
		"unicode escape":      `{"checkpoints":["\u0061"],` + head + `}`,
		"trailing bytes":      string(marshalLogView(v)) + ` `,
		"two values":          string(marshalLogView(v)) + `{}`,
		"invalid UTF-8":       `{"checkpoints":["` + "\xff" + `"],` + head + `}`,
		"huge":                `{"checkpoints":[` + strings.Repeat(" ", 64<<10) + `],` + head + `}`,
	} {
		if got, err := parseLogView([]byte(body)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: parsed %+v, %v", name, got, err)
		}
	}
}

// TestLogViewSpecExample checks the example body of docs/spec/chat.md
// §11.
func TestLogViewSpecExample(t *testing.T) {
	spec, err := os.ReadFile("../docs/spec/chat.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)A log-view body:\n\n```\n(.*?)\n```").FindSubmatch(spec)
	if m == nil {
		t.Fatal("no log-view example in chat.md")
	}
	if want := marshalLogView(testLogView(t)); !bytes.Equal(m[1], want) {
		t.Fatalf("chat.md shows\n%s\nthe code writes\n%s", m[1], want)
	}
	if _, err := parseLogView(m[1]); err != nil {
		t.Fatal(err)
	}
}

func FuzzParseLogView(f *testing.F) {
	head, _ := sigchain.ParseID(testHead)
	f.Add(marshalLogView(logView{Checkpoints: [][]byte{[]byte(testNote)}, HeadSeqno: 3, Head: head}))
	f.Add(marshalLogView(logView{HeadSeqno: 1, Head: head}))
	f.Add(marshalLogView(logView{Checkpoints: [][]byte{[]byte("a"), []byte("b\n<&>\u2028"), []byte("c"), []byte("d")}, HeadSeqno: 1<<53 - 1, Head: head}))
	f.Add([]byte(`{"checkpoints":["a","a"],"head":{"id":"x","seqno":0}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := parseLogView(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("%q: %v", b, err)
			}
			return
		}
		if !bytes.Equal(marshalLogView(v), b) {
			t.Fatalf("%q is not canonical", b)
		}
		if len(v.Checkpoints) > maxLogViewNotes || v.HeadSeqno == 0 {
			t.Fatalf("%q: over a cap: %+v", b, v)
		}
		for _, n := range v.Checkpoints {
			if len(n) == 0 || len(n) > maxLogViewNoteSize {
				t.Fatalf("%q: a note of %d bytes", b, len(n))
			}
		}
		if c, err := sigchain.Canonicalize(b); err != nil || !bytes.Equal(c, b) {
			t.Fatalf("%q parsed but is not canonical JSON: %v", b, err)
		}
	})
}
