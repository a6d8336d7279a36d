package sigchain_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/sigchain/sqlitestore"
)

const (
	aliceWords = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon art"
	malWords   = "zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo vote"
)

func identity(t testing.TB, words string) *kez.Identity {
	t.Helper()
	id, err := kez.FromWords(words)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// server is a sig-server on a real listener over a real SQLite file.
type server struct {
	url    string
	client *sigchain.Client
	store  *sqlitestore.Store
	close  func()
}

func startServer(t *testing.T, dbPath string, opts ...sigchain.HandlerOption) *server {
	t.Helper()
	store, err := sqlitestore.Open(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	opts = append([]sigchain.HandlerOption{sigchain.WithLogger(slog.New(slog.DiscardHandler))}, opts...)
	hs := httptest.NewServer(sigchain.NewHandler(store, opts...))
	var once sync.Once
	s := &server{url: hs.URL, client: &sigchain.Client{BaseURL: hs.URL, HTTPClient: hs.Client()}, store: store,
		close: func() { once.Do(func() { hs.Close(); store.Close() }) }}
	t.Cleanup(s.close)
	return s
}

// appendNew builds the link of typ after st with the current time, appends
// it and returns the new state.
func appendNew(t *testing.T, c *sigchain.Client, id *kez.Identity, st *sigchain.State, typ string, body []byte) (*sigchain.State, *sigchain.Link) {
	t.Helper()
	l, err := sigchain.NewLink(id, st, typ, body, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Append(context.Background(), l); err != nil {
		t.Fatalf("append %s: %v", typ, err)
	}
	next, err := st.Extend([]*sigchain.Link{l})
	if err != nil {
		t.Fatal(err)
	}
	return next, l
}

func eldest(id *kez.Identity, handle string) []byte {
	return sigchain.EldestBody(id.PublicKey(), id.EncryptionKey(0).PublicKey(), 0, handle)
}

func TestServerAppendFetchAndRestart(t *testing.T) {
	ctx := context.Background()
	alice := identity(t, aliceWords)
	db := filepath.Join(t.TempDir(), "sig.db")
	s := startServer(t, db)
	st, _ := appendNew(t, s.client, alice, nil, sigchain.TypeEldest, eldest(alice, "alice@kez.lat"))
	st, _ = appendNew(t, s.client, alice, st, sigchain.TypeAddClaim, sigchain.AddClaimBody("github", "alice", "https://gist.github.com/alice/1"))
	st, _ = appendNew(t, s.client, alice, st, sigchain.TypeSetSharedFiles, []byte(`{"files":[]}`))

	got, err := s.client.FetchVerified(ctx, alice.PublicKey(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Pin() != st.Pin() || got.Handle() != "alice@kez.lat" || len(got.Claims()) != 1 {
		t.Fatalf("fetched %+v, want %+v", got.Pin(), st.Pin())
	}
	tail, err := s.client.Fetch(ctx, alice.PublicKey(), 2)
	if err != nil || len(tail) != 1 || tail[0].Seqno() != 3 {
		t.Fatalf("since=2: %v %v", tail, err)
	}

	// Restart on the same file: everything is still there and appends go on.
	s.close()
	s2 := startServer(t, db)
	got, err = s2.client.FetchVerified(ctx, alice.PublicKey(), nil)
	if err != nil || got.Pin() != st.Pin() {
		t.Fatalf("after restart: %v %v", got, err)
	}
	st, _ = appendNew(t, s2.client, alice, st, sigchain.TypeSetHandle, sigchain.SetHandleBody("alice2@kez.lat"))
	got, err = s2.client.FetchVerified(ctx, alice.PublicKey(), got)
	if err != nil || got.Pin() != st.Pin() || got.Handle() != "alice2@kez.lat" {
		t.Fatalf("extend after restart: %v %v", got, err)
	}
}

// TestServerConcurrentAppends races 100 appends of different links at the
// same seqno (exactly one wins), then 40 appends by racing writers that
// retry on conflict (one link per seqno, none lost, the chain stays valid).
func TestServerConcurrentAppends(t *testing.T) {
	ctx := context.Background()
	alice := identity(t, aliceWords)
	s := startServer(t, filepath.Join(t.TempDir(), "sig.db"))
	st, _ := appendNew(t, s.client, alice, nil, sigchain.TypeEldest, eldest(alice, ""))

	const n = 100
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		l, err := sigchain.NewLink(alice, st, sigchain.TypeSetHandle, sigchain.SetHandleBody(fmt.Sprintf("a%d@kez.lat", i)), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = s.client.Append(ctx, l)
		}()
	}
	close(start)
	wg.Wait()
	wins := 0
	for _, err := range errs {
		var ce *sigchain.ConflictError
		switch {
		case err == nil:
			wins++
		case errors.As(err, &ce) && errors.Is(err, sigchain.ErrConflict):
			if ce.Head.Seqno != 2 {
				t.Errorf("conflict reports head %d, want 2", ce.Head.Seqno)
			}
		default:
			t.Errorf("unexpected error: %v", err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d appends at seqno 2 succeeded, want exactly 1", wins)
	}

	// 5 writers × 8 links, each retrying on conflict.
	const writers, each = 5, 8
	var mu sync.Mutex
	added := map[string]bool{}
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var cur *sigchain.State
			for k := 0; k < each; {
				next, err := s.client.FetchVerified(ctx, alice.PublicKey(), cur)
				if err != nil {
					t.Errorf("writer %d: fetch: %v", w, err)
					return
				}
				cur = next
				proof := fmt.Sprintf("https://example.com/%d/%d", w, k)
				l, err := sigchain.NewLink(alice, cur, sigchain.TypeAddClaim, sigchain.AddClaimBody("web", "alice", proof), time.Now())
				if err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
				err = s.client.Append(ctx, l)
				if errors.Is(err, sigchain.ErrConflict) {
					continue
				}
				if err != nil {
					t.Errorf("writer %d: append: %v", w, err)
					return
				}
				mu.Lock()
				added[proof] = true
				mu.Unlock()
				k++
			}
		}()
	}
	wg.Wait()
	final, err := s.client.FetchVerified(ctx, alice.PublicKey(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if final.Seqno() != 2+writers*each || len(final.Claims()) != writers*each || len(added) != writers*each {
		t.Fatalf("seqno %d, %d claims, %d added; want %d", final.Seqno(), len(final.Claims()), len(added), writers*each)
	}
	for _, c := range final.Claims() {
		if !added[c.Proof] {
			t.Fatalf("claim %s was not acknowledged", c.Proof)
		}
	}
}

// do sends a raw request and returns the status and decoded JSON body.
func do(t *testing.T, method, url string, body []byte) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("%s %s: %d answer is not JSON: %q", method, url, resp.StatusCode, data)
	}
	if resp.StatusCode >= 400 {
		if msg, _ := m["error"].(string); msg == "" {
			t.Fatalf("%s %s: %d without an error text: %s", method, url, resp.StatusCode, data)
		}
	}
	return resp.StatusCode, m
}

func TestServerStatuses(t *testing.T) {
	alice := identity(t, aliceWords)
	mal := identity(t, malWords)
	s := startServer(t, filepath.Join(t.TempDir(), "sig.db"))
	chain := s.url + "/v1/chains/" + alice.PublicKey().String()
	st, first := appendNew(t, s.client, alice, nil, sigchain.TypeEldest, eldest(alice, "alice@kez.lat"))
	next, err := sigchain.NewLink(alice, st, sigchain.TypeSetHandle, sigchain.SetHandleBody("b@kez.lat"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	st2, _ := st.Extend([]*sigchain.Link{next})
	third, err := sigchain.NewLink(alice, st2, sigchain.TypeSetHandle, sigchain.SetHandleBody("c@kez.lat"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	sig := next.Signature()
	sig[10] ^= 0x40
	forged := bytes.Replace(next.Bytes(), []byte(b64(next.Signature())), []byte(b64(sig)), 1)
	future, err := sigchain.NewLink(alice, st, sigchain.TypeSetHandle, sigchain.SetHandleBody("f@kez.lat"), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	malEldest, err := sigchain.NewLink(mal, nil, sigchain.TypeEldest, eldest(mal, ""), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	unsupported := rawUnsupported(t, alice, st)

	cases := []struct {
		name, method, url string
		body              []byte
		status            int
		contains          string
	}{
		{"bad key GET", "GET", s.url + "/v1/chains/UNOTAKEY", nil, 400, "not a KEZ public key"},
		{"bad key POST", "POST", s.url + "/v1/chains/nope/links", next.Bytes(), 400, "not a KEZ public key"},
		{"bad since", "GET", chain + "?since=-1", nil, 400, "since"},
		{"unknown chain", "GET", s.url + "/v1/chains/" + mal.PublicKey().String(), nil, 404, "no chain"},
		{"malformed", "POST", chain + "/links", []byte(`{"v":1, "seqno":2}`), 400, "malformed"},
		{"empty body", "POST", chain + "/links", nil, 400, "malformed"},
		{"not canonical", "POST", chain + "/links", bytes.Replace(next.Bytes(), []byte(`"seqno":2`), []byte(`"seqno": 2`), 1), 400, "malformed"},
		{"too large", "POST", chain + "/links", bytes.Repeat([]byte("a"), sigchain.MaxLinkSize+1), 413, "at most"},
		{"gap", "POST", chain + "/links", third.Bytes(), 409, "head has moved"},
		{"second eldest", "POST", chain + "/links", mustNewEldest(t, alice, "x@kez.lat").Bytes(), 409, "head has moved"},
		{"first link not eldest", "POST", s.url + "/v1/chains/" + mal.PublicKey().String() + "/links", rawSecond(t, mal, malEldest), 409, "eldest"},
		{"bad signature", "POST", chain + "/links", forged, 422, "bad signature"},
		{"other key than path", "POST", chain + "/links", malEldest.Bytes(), 422, "not by the chain's key"},
		{"ctime in the future", "POST", chain + "/links", future.Bytes(), 422, "future"},
		{"unsupported type", "POST", chain + "/links", unsupported, 422, "unsupported"},
		{"retry of a stored link", "POST", chain + "/links", first.Bytes(), 200, ""},
		{"append", "POST", chain + "/links", next.Bytes(), 201, ""},
		{"fetch", "GET", chain + "?since=1", nil, 200, ""},
	}
	for _, c := range cases {
		status, m := do(t, c.method, c.url, c.body)
		msg, _ := m["error"].(string)
		if status != c.status || !strings.Contains(msg, c.contains) {
			t.Errorf("%s: got %d %q, want %d containing %q", c.name, status, msg, c.status, c.contains)
		}
		if status == 409 {
			if _, ok := m["head_seqno"]; !ok {
				t.Errorf("%s: 409 without head_seqno: %v", c.name, m)
			}
		}
		if c.name == "fetch" {
			links, _ := m["links"].([]any)
			if len(links) != 1 || m["head_seqno"] != float64(2) || m["head"] != next.ID().String() {
				t.Errorf("fetch: %v", m)
			}
		}
	}

	// The client maps the same answers to typed errors.
	ctx := context.Background()
	if _, err := s.client.Fetch(ctx, mal.PublicKey(), 0); !errors.Is(err, sigchain.ErrNotFound) {
		t.Errorf("client 404: %v", err)
	}
	var ce *sigchain.ConflictError
	if err := s.client.Append(ctx, future); !errors.As(err, &ce) || ce.Head.Seqno != 2 || ce.Head.ID != next.ID() {
		t.Errorf("client 409: %v", err)
	}
	var se *sigchain.ServerError
	if err := s.client.Append(ctx, malEldestFor(t, mal)); err != nil {
		t.Errorf("a second chain: %v", err)
	}
	forgedLink, err := sigchain.ParseLink(forged)
	if err != nil {
		t.Fatal(err)
	}
	s2 := startServer(t, filepath.Join(t.TempDir(), "fresh.db"))
	if err := s2.client.Append(ctx, first); err != nil {
		t.Fatal(err)
	}
	if err := s2.client.Append(ctx, forgedLink); !errors.As(err, &se) || se.StatusCode != 422 || !errors.Is(err, sigchain.ErrInvalid) {
		t.Errorf("client 422: %v", err)
	}
}

func b64(sig []byte) string {
	b, _ := json.Marshal(sig) // standard base64 with padding
	s := strings.Trim(string(b), `"=`)
	return strings.NewReplacer("+", "-", "/", "_").Replace(s)
}

func mustNewEldest(t *testing.T, id *kez.Identity, handle string) *sigchain.Link {
	l, err := sigchain.NewLink(id, nil, sigchain.TypeEldest, eldest(id, handle), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func malEldestFor(t *testing.T, mal *kez.Identity) *sigchain.Link { return mustNewEldest(t, mal, "") }

// rawSecond is the second link of mal's chain, valid on top of its eldest.
func rawSecond(t *testing.T, mal *kez.Identity, e *sigchain.Link) []byte {
	st, err := sigchain.Verify([]*sigchain.Link{e})
	if err != nil {
		t.Fatal(err)
	}
	l, err := sigchain.NewLink(mal, st, sigchain.TypeSetHandle, sigchain.SetHandleBody(""), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return l.Bytes()
}

// rawUnsupported signs a link of an unknown type without
// ignore_if_unsupported, which NewLink refuses to build.
func rawUnsupported(t *testing.T, id *kez.Identity, st *sigchain.State) []byte {
	ok, err := sigchain.NewLink(id, st, "x_new", []byte(`{}`), time.Now(), sigchain.IgnoreIfUnsupported())
	if err != nil {
		t.Fatal(err)
	}
	payload := bytes.Replace(ok.SignedPayload(), []byte(`"ignore_if_unsupported":true`), []byte(`"ignore_if_unsupported":false`), 1)
	sig, err := id.Sign(kez.ContextSigchainLink, payload)
	if err != nil {
		t.Fatal(err)
	}
	return append(payload[:len(payload)-1], []byte(`,"sig":"`+b64(sig)+`"}`)...)
}

func TestClientForkRollbackAndPaging(t *testing.T) {
	ctx := context.Background()
	alice := identity(t, aliceWords)
	dir := t.TempDir()
	s := startServer(t, filepath.Join(dir, "a.db"), sigchain.WithMaxLinksPerResponse(3))
	var st *sigchain.State
	var links []*sigchain.Link
	st, l := appendNew(t, s.client, alice, nil, sigchain.TypeEldest, eldest(alice, "alice@kez.lat"))
	links = append(links, l)
	for i := range 9 {
		st, l = appendNew(t, s.client, alice, st, sigchain.TypeSetHandle, sigchain.SetHandleBody(fmt.Sprintf("a%d@kez.lat", i)))
		links = append(links, l)
	}
	// Ten links in pages of three.
	pinned, err := s.client.FetchVerified(ctx, alice.PublicKey(), nil)
	if err != nil || pinned.Seqno() != 10 || pinned.Pin() != st.Pin() {
		t.Fatalf("paged fetch: %v %v", pinned, err)
	}
	st, _ = appendNew(t, s.client, alice, st, sigchain.TypeSetHandle, sigchain.SetHandleBody("grown@kez.lat"))
	grown, err := s.client.FetchVerified(ctx, alice.PublicKey(), pinned)
	if err != nil || grown.Handle() != "grown@kez.lat" {
		t.Fatalf("grown chain: %v %v", grown, err)
	}

	// A server that lost the last three links: rollback.
	r := startServer(t, filepath.Join(dir, "rollback.db"))
	for _, l := range links[:7] {
		if err := r.client.Append(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.client.FetchVerified(ctx, alice.PublicKey(), pinned); !errors.Is(err, sigchain.ErrRollback) || errors.Is(err, sigchain.ErrFork) {
		t.Fatalf("shorter chain: got %v, want ErrRollback", err)
	}
	// A server without the chain at all: rollback too.
	empty := startServer(t, filepath.Join(dir, "empty.db"))
	if _, err := empty.client.FetchVerified(ctx, alice.PublicKey(), pinned); !errors.Is(err, sigchain.ErrRollback) {
		t.Fatalf("no chain: got %v, want ErrRollback", err)
	}
	// A server with a different link 10, and more after it: fork.
	f := startServer(t, filepath.Join(dir, "fork.db"))
	for _, l := range links[:9] {
		if err := f.client.Append(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	fst, err := f.client.FetchVerified(ctx, alice.PublicKey(), nil)
	if err != nil {
		t.Fatal(err)
	}
	fst, _ = appendNew(t, f.client, alice, fst, sigchain.TypeSetHandle, sigchain.SetHandleBody("evil@kez.lat"))
	appendNew(t, f.client, alice, fst, sigchain.TypeSetHandle, sigchain.SetHandleBody("evil2@kez.lat"))
	if _, err := f.client.FetchVerified(ctx, alice.PublicKey(), pinned); !errors.Is(err, sigchain.ErrFork) || errors.Is(err, sigchain.ErrRollback) {
		t.Fatalf("forked chain: got %v, want ErrFork", err)
	}
	// An unreachable server.
	f.close()
	if _, err := f.client.FetchVerified(ctx, alice.PublicKey(), pinned); !errors.Is(err, sigchain.ErrUnreachable) {
		t.Fatalf("closed server: got %v, want ErrUnreachable", err)
	}
}
