package jsstore_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/sigchain/jsstore"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Two sig-server replicas keep chains in one JetStream stream: alice
// appends through one, a contact fetches and verifies through the other.
func Example() {
	ctx := context.Background()
	natsURL, stop := natstest.StartForExample() // in production: the operator's NATS_URL
	defer stop()

	var replicas []*httptest.Server
	for range 2 {
		nc, _ := nats.Connect(natsURL) // each replica has its own connection
		defer nc.Close()
		js, _ := jetstream.New(nc)
		chains, err := jsstore.New(ctx, js) // WithReplicas(3) on a cluster
		if err != nil {
			panic(err)
		}
		hs := httptest.NewServer(sigchain.NewHandler(chains))
		defer hs.Close()
		replicas = append(replicas, hs)
	}

	alice, _ := kez.FromWords("abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon art")
	eldest, _ := sigchain.NewLink(alice, nil, sigchain.TypeEldest,
		sigchain.EldestBody(alice.PublicKey(), alice.EncryptionKey(0).PublicKey(), 0, "alice@kez.lat"), time.Now())
	if err := (&sigchain.Client{BaseURL: replicas[0].URL}).Append(ctx, eldest); err != nil {
		panic(err)
	}
	st, err := (&sigchain.Client{BaseURL: replicas[1].URL}).FetchVerified(ctx, alice.PublicKey(), nil)
	if err != nil {
		panic(err)
	}
	fmt.Println(st.Handle(), st.Seqno())
	// Output:
	// alice@kez.lat 1
}
