package sigchain_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/session"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/sigchain/sqlitestore"
	"github.com/kez-lat/kez-chat/sigchain/storetest"
)

// lyingServer is a hostile sig-server on a real HTTP server: it answers
// every prekey GET with body and status.
func lyingServer(t *testing.T, status int, body []byte) *sigchain.Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.WriteHeader(status)
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return &sigchain.Client{BaseURL: srv.URL, HTTPClient: srv.Client()}
}

// TestFetchPrekeyFromLiar: whatever a sig-server answers, FetchPrekey
// returns only a record that verifies for the key asked for.
func TestFetchPrekeyFromLiar(t *testing.T) {
	ctx := context.Background()
	alice, mallory := storetest.Identity(t, 1), storetest.Identity(t, 2)
	now := time.Now()
	rec := func(p *session.Prekey) []byte {
		b, err := p.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	good := rec(storetest.Prekey(t, alice, 1, now, time.Hour))
	tampered := bytes.Clone(good)
	tampered[100] ^= 1
	for _, c := range []struct {
		name   string
		status int
		body   []byte
		want   error
	}{
		{"mallory's record for alice", 200, rec(storetest.Prekey(t, mallory, 1, now, time.Hour)), session.ErrPrekeyOwner},
		{"a tampered KEM key", 200, tampered, session.ErrPrekeySignature},
		{"an expired record", 200, rec(storetest.Prekey(t, alice, 1, now.Add(-2*time.Hour), time.Hour)), session.ErrPrekeyExpired},
		{"a record from the future", 200, rec(storetest.Prekey(t, alice, 1, now.Add(time.Hour), time.Hour)), session.ErrPrekeyExpired},
		{"junk", 200, []byte("KEZP junk"), session.ErrMalformedPrekey},
		{"empty", 200, nil, session.ErrMalformedPrekey},
		{"a record and more", 200, append(bytes.Clone(good), 0), session.ErrMalformedPrekey},
		{"an endless answer", 200, bytes.Repeat(good, 100), nil},
		{"404 without a reason (no directory)", 404, []byte(`{"error":"nothing"}`), sigchain.ErrNoPrekey},
		{"404 no_prekey", 404, []byte(`{"error":"nothing","reason":"no_prekey"}`), sigchain.ErrNoPrekey},
		{"500", 500, []byte(`{"error":"boom"}`), nil},
	} {
		p, err := lyingServer(t, c.status, c.body).FetchPrekey(ctx, alice.PublicKey())
		if p != nil || err == nil || c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("%s: %v, %v; want %v", c.name, p, err, c.want)
		}
	}
	if p, err := lyingServer(t, 200, good).FetchPrekey(ctx, alice.PublicKey()); err != nil || !bytes.Equal(rec(p), good) {
		t.Fatalf("an honest answer: %v", err)
	}
}

// chainsOnly hides every method of a store but those of sigchain.Store.
type chainsOnly struct{ sigchain.Store }

// TestNoPrekeyStore: a handler over a store that keeps no prekeys has no
// prekey routes.
func TestNoPrekeyStore(t *testing.T) {
	st, err := sqlitestore.Open(filepath.Join(t.TempDir(), "sig.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	srv := httptest.NewServer(sigchain.NewHandler(chainsOnly{st}, sigchain.WithLogger(slog.New(slog.DiscardHandler))))
	t.Cleanup(srv.Close)
	id := storetest.Identity(t, 1)
	c := &sigchain.Client{BaseURL: srv.URL, HTTPClient: srv.Client()}
	if err := c.Append(context.Background(), storetest.Chain(t, id, 1)[0]); err != nil {
		t.Fatal(err)
	}
	var se *sigchain.ServerError
	err = c.PublishPrekey(context.Background(), storetest.Prekey(t, id, 1, time.Now(), time.Hour))
	if !errors.As(err, &se) || se.StatusCode != 501 {
		t.Fatalf("publishing to a server without a directory: %v, want a 501", err)
	}
	if _, err := c.FetchPrekey(context.Background(), id.PublicKey()); !errors.As(err, &se) || se.StatusCode != 501 {
		t.Fatalf("fetching from a server without a directory: %v, want a 501", err)
	}
}

// FuzzPutPrekey sends arbitrary bodies to the prekey PUT of a handler
// over a real SQLite store holding one chain: the answer is always one of
// the documented statuses, and a record is stored only if it verifies
// for the key.
func FuzzPutPrekey(f *testing.F) {
	st, err := sqlitestore.Open(filepath.Join(f.TempDir(), "sig.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	id := storetest.Identity(f, 1)
	if err := st.Append(context.Background(), storetest.Chain(f, id, 1)[0]); err != nil {
		f.Fatal(err)
	}
	now := time.Now()
	h := sigchain.NewHandler(st, sigchain.WithLimits(sigchain.NoLimits()), sigchain.WithLogger(slog.New(slog.DiscardHandler)),
		sigchain.WithVerifyOptions(sigchain.WithClock(func() time.Time { return now })))
	for i, created := range []time.Time{now.Add(-time.Hour), now.Add(-2 * time.Hour), now.Add(time.Hour)} {
		b, err := storetest.Prekey(f, id, uint32(i), created, 24*time.Hour).MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)-1])
	}
	f.Add([]byte("KEZP"))
	f.Add(make([]byte, sigchain.MaxPrekeySize+1))
	path := sigchain.PrekeysPath + id.PublicKey().String()
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPut, path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/octet-stream")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		switch w.Code {
		case 200, 201:
			p, err := session.ParsePrekey(body)
			if err != nil || p.Verify(id.PublicKey(), now) != nil || p.Expires.Sub(p.Created) > sigchain.MaxPrekeyLifetime {
				t.Fatalf("stored a record that does not verify: %v", err)
			}
		case 400, 409, 413, 422:
		default:
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
	})
}
