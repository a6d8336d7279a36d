package handles

import (
	"context"
	"net/http"
	"testing"
	"time"
)

// The callout's hot path: the key lookup, beside a bare query on the same
// SQLite file.
func BenchmarkLookupKey(b *testing.B) {
	s, _ := openTestStore(b)
	ctx := context.Background()
	id := newIdentity(b)
	if _, err := s.Claim(ctx, rec("alice", id.PublicKey())); err != nil {
		b.Fatal(err)
	}
	b.Run("SQLiteStore.LookupKey", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.LookupKey(ctx, id.PublicKey()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("baseline/SELECT 1", func(b *testing.B) {
		for b.Loop() {
			var one int
			if err := s.db.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// Resolution over loopback HTTP: uncached (lookup + chain fetch + verify),
// cached, and the baseline of fetching and verifying the chain alone.
func BenchmarkResolve(b *testing.B) {
	s := newStack(b, "kez.lat")
	alice := s.register(b, "alice")
	ctx := context.Background()
	hc := &http.Client{Timeout: 10 * time.Second}
	b.Run("uncached", func(b *testing.B) {
		r := &Resolver{DefaultDomain: "kez.lat", HomeServer: s.chat.URL, HTTPClient: hc, TTL: -1}
		for b.Loop() {
			if _, err := r.Resolve(ctx, "alice"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		r := &Resolver{DefaultDomain: "kez.lat", HomeServer: s.chat.URL, HTTPClient: hc}
		for b.Loop() {
			if _, err := r.Resolve(ctx, "alice"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("baseline/sigchain.FetchVerified", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.sigc.FetchVerified(ctx, alice.PublicKey(), nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}
