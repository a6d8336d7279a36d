package sigchain_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/kez-lat/kez-chat/internal/testenv/logtest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/sigchain/storetest"
	"github.com/kez-lat/kez-chat/translog"
)

// appendChain appends links to the server and fails the test if it
// refuses one.
func appendChain(t *testing.T, s *logtest.Server, links []*sigchain.Link) {
	t.Helper()
	for _, l := range links {
		if err := s.Client(nil).Append(context.Background(), l); err != nil {
			t.Fatalf("appending seqno %d: %v", l.Seqno(), err)
		}
	}
}

// TestFetchLogProvesHead: with Log set, a fetch from a server that keeps
// a log checks the head's proof, pins the log and keeps its checkpoint;
// a later fetch after more links checks the new checkpoint's consistency.
func TestFetchLogProvesHead(t *testing.T) {
	ctx := context.Background()
	s := logtest.Start(t, logtest.Options{})
	links := storetest.Chain(t, storetest.Identity(t, 1), 3)
	appendChain(t, s, links[:2])
	mon := &translog.Monitor{}
	c := s.Client(mon)
	got, err := c.Fetch(ctx, links[0].Key(), 0)
	if err != nil || len(got) != 2 {
		t.Fatalf("Fetch: %d links, %v", len(got), err)
	}
	first, err := mon.Latest(ctx, s.URL)
	if err != nil || first == nil {
		t.Fatalf("no checkpoint kept: %q, %v", first, err)
	}
	appendChain(t, s, links[2:])
	if _, err := c.FetchVerified(ctx, links[0].Key(), nil); err != nil {
		t.Fatal(err)
	}
	if next, _ := mon.Latest(ctx, s.URL); bytes.Equal(next, first) {
		t.Fatal("the newer checkpoint was not kept")
	}
	// From the pinned head on (the page holds one link) and past it
	// (none): the head is proven either way.
	if _, err := c.Fetch(ctx, links[0].Key(), 2); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Fetch(ctx, links[0].Key(), 3); err != nil {
		t.Fatal(err)
	}
}

// TestFetchLogDropped: a server whose log was pinned and that then
// serves chains without proofs is refused with ErrNotLogged; a Client
// without Log still reads it.
func TestFetchLogDropped(t *testing.T) {
	ctx := context.Background()
	s := logtest.Start(t, logtest.Options{})
	links := storetest.Chain(t, storetest.Identity(t, 2), 2)
	appendChain(t, s, links)
	mon := &translog.Monitor{}
	if _, err := s.Client(mon).Fetch(ctx, links[0].Key(), 0); err != nil {
		t.Fatal(err)
	}
	s.Serve(s.Unlogged)
	_, err := s.Client(mon).Fetch(ctx, links[0].Key(), 0)
	if !errors.Is(err, translog.ErrNotLogged) {
		t.Fatalf("a server that dropped its log: %v, want ErrNotLogged", err)
	}
	if _, err := s.Client(nil).Fetch(ctx, links[0].Key(), 0); err != nil {
		t.Fatalf("without Log: %v", err)
	}
	// A Monitor that never saw the log trusts the unlogged server on
	// first use, unless it requires a log.
	if _, err := s.Client(&translog.Monitor{}).Fetch(ctx, links[0].Key(), 0); err != nil {
		t.Fatalf("a new Monitor: %v", err)
	}
	_, err = s.Client(&translog.Monitor{RequireLog: true}).Fetch(ctx, links[0].Key(), 0)
	if !errors.Is(err, translog.ErrNotLogged) {
		t.Fatalf("RequireLog: %v, want ErrNotLogged", err)
	}
}

// TestFetchLogRewritten: a server that rewrites its log (another history
// signed with the same key) is caught by the next fetch: its checkpoint
// is not consistent with the one kept, a *SplitViewError with both.
func TestFetchLogRewritten(t *testing.T) {
	ctx := context.Background()
	key := filepath.Join(t.TempDir(), "log.key")
	honest := logtest.Start(t, logtest.Options{KeyFile: key})
	rewritten := logtest.Start(t, logtest.Options{KeyFile: key})
	a := storetest.Chain(t, storetest.Identity(t, 3), 1)
	b := storetest.Chain(t, storetest.Identity(t, 4), 1)
	c := storetest.Chain(t, storetest.Identity(t, 5), 1)
	appendChain(t, honest, a)
	appendChain(t, honest, b)
	// The same chains (and one more), logged in another order.
	appendChain(t, rewritten, b)
	appendChain(t, rewritten, a)
	appendChain(t, rewritten, c)
	mon := &translog.Monitor{}
	if _, err := honest.Client(mon).Fetch(ctx, a[0].Key(), 0); err != nil {
		t.Fatal(err)
	}
	ours, _ := mon.Latest(ctx, honest.URL)
	honest.Serve(rewritten.Logged)
	_, err := honest.Client(mon).Fetch(ctx, a[0].Key(), 0)
	var sv *translog.SplitViewError
	if !errors.As(err, &sv) || !errors.Is(err, translog.ErrSplitView) {
		t.Fatalf("a rewritten log: %v, want a SplitViewError", err)
	}
	if !bytes.Equal(sv.Ours, ours) || len(sv.Theirs) == 0 || bytes.Equal(sv.Theirs, ours) || sv.Origin != logtest.Origin {
		t.Fatalf("the split view names %q and %q, want ours %q and the rewritten one", sv.Ours, sv.Theirs, ours)
	}
	if now, _ := mon.Latest(ctx, honest.URL); !bytes.Equal(now, ours) {
		t.Fatal("the rewritten checkpoint replaced the one kept")
	}
}

// rewrite serves h's answers to chain GETs after edit changed their JSON
// (links stay byte for byte as they were).
func rewrite(t *testing.T, h http.Handler, edit func(page map[string]json.RawMessage)) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		body, _ := io.ReadAll(rec.Result().Body)
		var page map[string]json.RawMessage
		if r.Method == http.MethodGet && rec.Code == http.StatusOK && json.Unmarshal(body, &page) == nil && page["links"] != nil {
			edit(page)
			body, _ = json.Marshal(page)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(rec.Code)
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func rawJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

// TestFetchLogLyingPages: pages whose head is not their last link, or
// whose proof is another chain's or broken, are refused with ErrBadProof;
// nothing of them is returned.
func TestFetchLogLyingPages(t *testing.T) {
	ctx := context.Background()
	s := logtest.Start(t, logtest.Options{})
	alice := storetest.Chain(t, storetest.Identity(t, 6), 3)
	bob := storetest.Chain(t, storetest.Identity(t, 7), 1)
	appendChain(t, s, alice)
	appendChain(t, s, bob)
	var bobPage map[string]json.RawMessage
	resp, err := http.Get(s.URL + sigchain.ChainsPath + bob[0].Key().String())
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(resp.Body).Decode(&bobPage)
	resp.Body.Close()
	if err != nil || bobPage["log"] == nil {
		t.Fatalf("bob's page: %v", err)
	}
	for name, edit := range map[string]func(map[string]json.RawMessage){
		"head is not the last link": func(p map[string]json.RawMessage) {
			p["head"], p["head_seqno"] = rawJSON(alice[1].ID().String()), rawJSON(2)
		},
		"another chain's proof": func(p map[string]json.RawMessage) { p["log"] = bobPage["log"] },
		// Hides the last link, with the proof of it.
		"the proof of another link": func(p map[string]json.RawMessage) {
			p["links"] = rawJSON([]json.RawMessage{alice[0].Bytes(), alice[1].Bytes()})
			p["head"], p["head_seqno"] = rawJSON(alice[1].ID().String()), rawJSON(2)
		},
		"a broken proof": func(p map[string]json.RawMessage) {
			var hp translog.HeadProof
			json.Unmarshal(p["log"], &hp)
			hp.Proof[0] = hp.Proof[len(hp.Proof)-1]
			hp.Index++
			p["log"] = rawJSON(hp)
		},
		"no checkpoint": func(p map[string]json.RawMessage) { p["log"] = rawJSON(translog.HeadProof{}) },
		// A head of 0 names no chain, so there would be nothing to prove:
		// links must not come with it.
		"head 0 with links": func(p map[string]json.RawMessage) {
			p["head"], p["head_seqno"] = rawJSON(""), rawJSON(0)
			delete(p, "log")
		},
	} {
		t.Run(name, func(t *testing.T) {
			srv := rewrite(t, s.Logged, edit)
			links, err := (&sigchain.Client{BaseURL: srv.URL, Log: &translog.Monitor{}}).Fetch(ctx, alice[0].Key(), 0)
			refused := errors.Is(err, translog.ErrBadProof) || errors.Is(err, translog.ErrBadCheckpoint) || errors.Is(err, translog.ErrLogKeyChanged)
			if !refused || links != nil {
				t.Fatalf("%d links, %v; want ErrBadProof (ErrBadCheckpoint, ErrLogKeyChanged for a checkpoint that is none)", len(links), err)
			}
		})
	}
}

// TestFetchLogNoChain: a key the server has no chain for is ErrNotFound,
// whatever the log.
func TestFetchLogNoChain(t *testing.T) {
	s := logtest.Start(t, logtest.Options{})
	_, err := s.Client(&translog.Monitor{}).Fetch(context.Background(), kez.PublicKey{1}, 0)
	if !errors.Is(err, sigchain.ErrNotFound) {
		t.Fatalf("%v, want ErrNotFound", err)
	}
}
