package audit_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/ratelimit"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/sigchain/sqlitestore"
	"github.com/kez-lat/kez-chat/translog/logserver"
)

// hookStore is a real SQLite store that runs a hook once, before the
// first Links read matching since and limit: another request's work
// landing between two reads of the sig-server.
type hookStore struct {
	*sqlitestore.Store
	mu           sync.Mutex
	since, limit uint64
	hook         func()
}

func (s *hookStore) Links(ctx context.Context, key kez.PublicKey, since uint64, limit int) ([][]byte, sigchain.Head, error) {
	s.mu.Lock()
	h := s.hook
	if h != nil && since == s.since && uint64(limit) == s.limit {
		s.hook = nil
	} else {
		h = nil
	}
	s.mu.Unlock()
	if h != nil {
		h()
	}
	return s.Store.Links(ctx, key, since, limit)
}

// TestChainReplacedWhileLogging: a chain deleted (an orphan collected)
// and made again by its key between the sig-server's reads of it while it
// logs it must not leave the log with the old chain's links followed by
// the new chain's without a deletion entry between them, a history no
// chain ever had, which the audit would blame the honest server for.
func TestChainReplacedWhileLogging(t *testing.T) {
	ctx := context.Background()
	l := openLogServer(t)
	inner, err := sqlitestore.Open(filepath.Join(t.TempDir(), "sig.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inner.Close() })
	store := &hookStore{Store: inner}
	mux := http.NewServeMux()
	mux.Handle(sigchain.ChainsPath, sigchain.NewHandler(store, sigchain.WithLimits(sigchain.NoLimits()), sigchain.WithLogger(discard), sigchain.WithLog(l)))
	logs := l.Handler(logserver.Limits{ReadsPerIP: ratelimit.Unlimited})
	mux.Handle("/v1/info", logs)
	mux.Handle("/v1/log/", logs)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	r := &rig{url: srv.URL, chains: &sigchain.Client{BaseURL: srv.URL, HTTPClient: srv.Client()}, state: filepath.Join(t.TempDir(), "audit.db")}

	a := newChain(t, "m")
	r.grow(t, a, 3) // logged
	// Seqno 4 stored but not logged yet (a crash between the two).
	if err := inner.Append(ctx, a.next(t)); err != nil {
		t.Fatal(err)
	}
	b := newChain(t, "m") // the same key's next chain, after a collection
	b.variant = 1
	for range 5 {
		b.next(t)
	}
	// While the next read logs seqno 4 on top of the logged seqno 3, the
	// chain is collected and made again with five links.
	store.mu.Lock()
	store.since, store.limit = 3, sigchain.MaxLinksPerResponse
	store.hook = func() {
		if n, err := inner.CollectOrphans(ctx, time.Now().Add(time.Hour)); err != nil || n != 1 {
			t.Errorf("collected %d, %v", n, err)
		}
		for _, lk := range b.links {
			if err := inner.Append(ctx, lk); err != nil {
				t.Error(err)
			}
		}
	}
	store.mu.Unlock()
	r.chains.Fetch(ctx, a.id.PublicKey(), 0) // whatever it answers

	s := r.audit(t)
	if s.Problems() != 0 {
		t.Errorf("the audit of an honest server found problems: %+v", s.Findings)
	}
	e, _, ok, err := l.Logged(ctx, a.id.PublicKey())
	if err != nil || !ok || e != entry(b.links[4]) {
		t.Errorf("newest logged %+v %v %v, want %+v", e, ok, err, entry(b.links[4]))
	}
}
