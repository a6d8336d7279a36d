package jsstore

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/sigchain/sqlitestore"
	"github.com/kez-lat/kez-chat/sigchain/storetest"
)

// BenchmarkStores compares the JetStream store (in-process nats-server,
// one replica) with the SQLite store in one run, beside the raw floors: a
// JetStream publish acknowledged without expectations, and a leader
// message get of one literal subject.
func BenchmarkStores(b *testing.B) {
	ctx := context.Background()
	srv := natstest.Run(b, natstest.JetStreamConf)
	js := natstest.ConnectJetStream(b, srv.ClientURL())
	jsStore, err := New(ctx, js)
	if err != nil {
		b.Fatal(err)
	}
	sqlStore, err := sqlitestore.Open(filepath.Join(b.TempDir(), "sig.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sqlStore.Close() })
	stores := []struct {
		name string
		s    sigchain.Store
	}{{"SQLite", sqlStore}, {"JetStream", jsStore}}

	// A 10-link chain to read.
	ten := storetest.Chain(b, storetest.Identity(b, 0), 10)
	for _, st := range stores {
		for _, l := range ten {
			if err := st.s.Append(ctx, l); err != nil {
				b.Fatal(err)
			}
		}
	}
	key := ten[0].Key()

	next := 1 // a new chain for every Append run
	for _, st := range stores {
		b.Run(st.name+"/Append", func(b *testing.B) {
			links := storetest.Chain(b, storetest.Identity(b, next), b.N)
			next++
			b.ResetTimer()
			for _, l := range links {
				if err := st.s.Append(ctx, l); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(st.name+"/Head", func(b *testing.B) {
			for b.Loop() {
				if _, err := st.s.Head(ctx, key); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(st.name+"/Links10", func(b *testing.B) {
			for b.Loop() {
				if got, _, err := st.s.Links(ctx, key, 0, 100); err != nil || len(got) != 10 {
					b.Fatal(err)
				}
			}
		})
	}

	b.Run("baseline/JetStream publish", func(b *testing.B) {
		body := ten[5].Bytes()
		for b.Loop() {
			if _, err := js.Publish(ctx, "kez.v1.chain.bench.1", body); err != nil {
				b.Fatal(err)
			}
		}
	})
	subj := fmt.Sprintf("kez.v1.chain.%s.5", key)
	b.Run("baseline/JetStream leader get", func(b *testing.B) {
		for b.Loop() {
			if m, err := jsStore.last(ctx, subj); err != nil || m == nil {
				b.Fatal(err)
			}
		}
	})
}
