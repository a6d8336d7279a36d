package jsstore_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"time"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/handles/jsstore"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
	sigjs "github.com/kez-lat/kez-chat/sigchain/jsstore"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Two chat-server replicas share one registry in JetStream (and the
// sig-server keeps chains there too): alice claims her handle at one
// replica and is found at the other at once.
func Example() {
	ctx := context.Background()
	natsURL, stop := natstest.StartForExample() // in production: the operator's NATS_URL
	defer stop()

	// The sig-server.
	nc, _ := nats.Connect(natsURL)
	defer nc.Close()
	js, _ := jetstream.New(nc)
	chains, err := sigjs.New(ctx, js) // WithReplicas(3) on a cluster
	if err != nil {
		panic(err)
	}
	sigServer := httptest.NewServer(sigchain.NewHandler(chains))
	defer sigServer.Close()

	// Two chat-server replicas, each with its own connection.
	var conns []*nats.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	replica := func() *httptest.Server {
		nc, _ := nats.Connect(natsURL)
		conns = append(conns, nc)
		js, _ := jetstream.New(nc)
		registry, err := jsstore.New(ctx, js) // WithReplicas(3) on a cluster
		if err != nil {
			panic(err)
		}
		srv, err := handles.NewServer(handles.ServerConfig{
			Domain: "kez.lat", Store: registry, SigServer: &sigchain.Client{BaseURL: sigServer.URL},
		})
		if err != nil {
			panic(err)
		}
		return httptest.NewServer(srv)
	}
	a, b := replica(), replica()
	defer a.Close()
	defer b.Close()

	// Alice registers at replica a.
	alice, _ := kez.FromWords("abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon art")
	h, _ := handles.Parse("alice@kez.lat", "")
	if _, err := handles.Register(ctx, alice, h, handles.RegisterOptions{ServerURL: a.URL, SigServerURL: sigServer.URL}); err != nil {
		panic(err)
	}

	// Replica b resolves her.
	res, err := (&handles.Resolver{DefaultDomain: "kez.lat", HomeServer: b.URL}).Resolve(ctx, "alice")
	if err != nil {
		panic(err)
	}
	fmt.Println(res.Handle.Display(), res.Key)
	// Output:
	// @alice@kez.lat UBEZRRVSGPSBY27Q4OUWJ2U276ERUCM7QPE5Y5BAWKI7BGJHDCPONM47
}

// A chat-server answers logins from a view of the registry: after Sync
// the view holds every change stored before, and answers from memory
// (also while the bucket's stream has no leader, for up to the maximum
// staleness).
func ExampleStore_NewView() {
	ctx := context.Background()
	natsURL, stop := natstest.StartForExample() // in production: the operator's NATS_URL
	defer stop()
	nc, _ := nats.Connect(natsURL)
	defer nc.Close()
	js, _ := jetstream.New(nc)
	registry, err := jsstore.New(ctx, js)
	if err != nil {
		panic(err)
	}
	view, err := registry.NewView(ctx, jsstore.WithMaxStale(10*time.Second))
	if err != nil {
		panic(err)
	}
	defer view.Close()

	alice, _ := kez.FromWords("abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon art")
	h, _ := handles.Parse("alice@kez.lat", "")
	if _, err := registry.Claim(ctx, handles.Record{Handle: h, Key: alice.PublicKey()}); err != nil {
		panic(err)
	}
	if err := view.Sync(ctx); err != nil {
		panic(err)
	}
	rec, err := view.LookupKey(ctx, alice.PublicKey())
	fmt.Println(rec.Handle.Display(), err, view.Stats().Lookups[jsstore.AnswerView])
	// Output:
	// @alice@kez.lat <nil> 1
}
