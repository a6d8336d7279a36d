package jsstore

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/handles/storetest"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/kez-lat/kez-chat/kez"
)

// BenchmarkStores compares the JetStream registry (in-process nats-server,
// one replica) with the SQLite registry in one run, beside the raw floors:
// a leader message get and a KV create for JetStream, SELECT 1 for SQLite.
func BenchmarkStores(b *testing.B) {
	ctx := context.Background()
	srv := natstest.Run(b, natstest.JetStreamConf)
	js := natstest.ConnectJetStream(b, srv.ClientURL())
	jsStore, err := New(ctx, js)
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "handles.db")
	sqlStore, err := handles.OpenSQLite(path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sqlStore.Close() })
	stores := []struct {
		name string
		s    handles.Store
	}{{"SQLite", sqlStore}, {"JetStream", jsStore}}
	for _, st := range stores {
		if _, err := st.s.Claim(ctx, storetest.Rec("alice", storetest.Key(0))); err != nil {
			b.Fatal(err)
		}
	}

	for _, st := range stores {
		next := 1 // a new name and key for every claim, across runs
		b.Run(st.name+"/Claim", func(b *testing.B) {
			keys := make([]kez.PublicKey, b.N)
			for i := range keys {
				keys[i] = storetest.Key(next + i)
			}
			b.ResetTimer()
			for i := range b.N {
				created, err := st.s.Claim(ctx, storetest.Rec(fmt.Sprintf("u%d", next+i), keys[i]))
				if err != nil || !created {
					b.Fatal(created, err)
				}
			}
			next += b.N
		})
		b.Run(st.name+"/LookupKey", func(b *testing.B) {
			for b.Loop() {
				if _, err := st.s.LookupKey(ctx, storetest.Key(0)); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(st.name+"/Lookup", func(b *testing.B) {
			h := handles.Handle{Name: "alice", Domain: "kez.lat"}
			for b.Loop() {
				if _, err := st.s.Lookup(ctx, h); err != nil {
					b.Fatal(err)
				}
			}
		})
	}

	nk, _ := nameKey(handles.Handle{Name: "alice", Domain: "kez.lat"})
	b.Run("baseline/JetStream leader get", func(b *testing.B) {
		for b.Loop() {
			if g, err := jsStore.get(ctx, nk); err != nil || !g.found {
				b.Fatal(err)
			}
		}
	})
	b.Run("baseline/JetStream KV.Get (direct)", func(b *testing.B) {
		for b.Loop() {
			if _, err := jsStore.kv.Get(ctx, nk); err != nil {
				b.Fatal(err)
			}
		}
	})
	i := 0 // a new key for every create, across runs
	b.Run("baseline/JetStream KV.Create", func(b *testing.B) {
		for b.Loop() {
			i++
			if _, err := jsStore.kv.Create(ctx, fmt.Sprintf("bench.%d", i), []byte(`{}`)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("baseline/SQLite SELECT 1", func(b *testing.B) {
		db, err := sql.Open("sqlite", path)
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		for b.Loop() {
			var one int
			if err := db.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
				b.Fatal(err)
			}
		}
	})
}
