package chat

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
)

const testHead = "bafkreibjn3nrvcfg6m35kuxbjlqsntwhwvq3ti453ncq747j7w2xhdrcb4"

// The group-update and group-read bodies have one encoding each: what
// parses writes back byte for byte, and every other form is refused.
func TestGroupBodies(t *testing.T) {
	head, err := cid.Parse(testHead)
	if err != nil {
		t.Fatal(err)
	}
	u := groupUpdate{Group: "team@kez.lat", Head: head, Seqno: 7, SigServer: "https://sig.kez.lat"}
	body := marshalGroupUpdate(u)
	want := `{"group":"team@kez.lat","head":"` + testHead + `","seqno":7,"sig_server":"https://sig.kez.lat"}`
	if string(body) != want {
		t.Fatalf("group-update body\n%s\nwant\n%s", body, want)
	}
	if got, err := parseGroupUpdate(body); err != nil || got != u {
		t.Fatalf("parsed %+v, %v", got, err)
	}
	for _, bad := range []string{
		``, `{}`, `null`,
		`{"group":"team@kez.lat","head":"` + testHead + `","seqno":7,"sig_server":"https://sig.kez.lat"} `,
		`{"seqno":7,"group":"team@kez.lat","head":"` + testHead + `","sig_server":"https://sig.kez.lat"}`,
		`{"group":"team","head":"` + testHead + `","seqno":7,"sig_server":"https://sig.kez.lat"}`,
		`{"group":"team@kez.lat","head":"nope","seqno":7,"sig_server":"https://sig.kez.lat"}`,
		`{"group":"team@kez.lat","head":"` + testHead + `","seqno":0,"sig_server":"https://sig.kez.lat"}`,
		`{"group":"team@kez.lat","head":"` + testHead + `","seqno":7,"sig_server":"ftp://sig.kez.lat"}`,
		`{"group":"team@kez.lat","head":"` + testHead + `","seqno":7,"sig_server":"https://sig.kez.lat","x":1}`,
	} {
		if _, err := parseGroupUpdate([]byte(bad)); !errors.Is(err, ErrMalformed) {
			t.Errorf("group-update %q: %v", bad, err)
		}
	}

	a, b := MessageID{1}, MessageID{2}
	r := groupRead{Group: "team@kez.lat", IDs: []MessageID{b, a, b}}
	body = marshalGroupRead(r)
	want = `{"group":"team@kez.lat","ids":["` + a.String() + `","` + b.String() + `"]}`
	if string(body) != want {
		t.Fatalf("group-read body %s, want %s", body, want)
	}
	got, err := parseGroupRead(body)
	if err != nil || got.Group != r.Group || len(got.IDs) != 2 || got.IDs[0] != a {
		t.Fatalf("parsed %+v, %v", got, err)
	}
	many := make([]string, 257)
	for i := range many {
		id := MessageID{byte(i >> 8), byte(i), 1}
		many[i] = `"` + id.String() + `"`
	}
	for _, bad := range []string{
		`{"group":"team@kez.lat","ids":[]}`,
		`{"group":"team@kez.lat","ids":["` + b.String() + `","` + a.String() + `"]}`,
		`{"group":"team@kez.lat","ids":["` + a.String() + `","` + a.String() + `"]}`,
		`{"group":"team@kez.lat","ids":["` + strings.ToUpper(MessageID{0xab}.String()) + `"]}`,
		`{"group":"team@kez.lat","ids":["` + MessageID{}.String() + `"]}`,
		`{"group":"team@kez.lat","ids":[` + strings.Join(many, ",") + `]}`,
		`{"ids":["` + a.String() + `"],"group":"team@kez.lat"}`,
	} {
		if _, err := parseGroupRead([]byte(bad)); !errors.Is(err, ErrMalformed) {
			t.Errorf("group-read %.80q: %v", bad, err)
		}
	}
}

// FuzzGroupBodies: the group-update and group-read parsers never panic,
// refuse with ErrMalformed, and what they accept is canonical.
func FuzzGroupBodies(f *testing.F) {
	head, _ := cid.Parse(testHead)
	f.Add(marshalGroupUpdate(groupUpdate{Group: "team@kez.lat", Head: head, Seqno: 7, SigServer: "https://sig.kez.lat"}))
	f.Add(marshalGroupRead(groupRead{Group: "team@kez.lat", IDs: []MessageID{{1}, {2}}}))
	f.Add([]byte(`{"group":"a@b","ids":["00"]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if u, err := parseGroupUpdate(b); err == nil {
			if !bytes.Equal(marshalGroupUpdate(u), b) {
				t.Fatalf("group-update %q is not canonical", b)
			}
		} else if !errors.Is(err, ErrMalformed) {
			t.Fatalf("group-update: %v", err)
		}
		if r, err := parseGroupRead(b); err == nil {
			if !bytes.Equal(marshalGroupRead(r), b) || len(r.IDs) == 0 || len(r.IDs) > maxGroupReadIDs {
				t.Fatalf("group-read %q is not canonical", b)
			}
		} else if !errors.Is(err, ErrMalformed) {
			t.Fatalf("group-read: %v", err)
		}
	})
}
