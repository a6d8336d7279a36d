package callout_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/internal/testenv/exampletb"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/natsconn"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Example wires the callout for a NATS server whose nats.conf includes the
// snippet NATSConfig renders: the service admits the keys its directory
// knows, and provisions the inbox stream.
func Example() {
	keys, err := callout.GenerateKeys() // an operator keeps them: LoadOrCreateKeys(dir)
	if err != nil {
		log.Fatal(err)
	}
	snippet, err := callout.NATSConfig(keys, callout.ConfigOptions{})
	if err != nil {
		log.Fatal(err)
	}
	// The operator adds the snippet to nats.conf and restarts NATS; here
	// a nats-server runs in-process with it.
	tb := exampletb.New()
	defer tb.Close()
	natsURL := natstest.Run(tb, snippet).ClientURL()

	dir := &callout.StaticDirectory{} // or the handle registry
	alice, _ := kez.FromWords(aliceWords)
	dir.Set(alice.PublicKey(), callout.Entry{Handle: "alice@kez.lat"})

	svc, err := callout.New(callout.Config{Keys: keys, Directory: dir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	nc, err := nats.Connect(natsURL, keys.ServiceOptions()...)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	if err := svc.Listen(nc); err != nil {
		log.Fatal(err)
	}
	defer svc.Close()

	// The chat-server provisions the inbox stream through the callout too.
	pc, err := nats.Connect(natsURL, keys.ProvisionerOptions()...)
	if err != nil {
		log.Fatal(err)
	}
	defer pc.Close()
	js, _ := jetstream.New(pc)
	stream, err := callout.ProvisionInbox(context.Background(), js, callout.InboxConfig{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("inbox stream:", stream.CachedInfo().Config.Name)

	// A key the directory knows logs in; any other is refused.
	ctx := context.Background()
	if uc, err := natsconn.Connect(ctx, natsURL, alice); err == nil {
		fmt.Println("alice logged in")
		uc.Close()
	}
	stranger, _, _ := kez.NewIdentity()
	_, err = natsconn.Connect(ctx, natsURL, stranger)
	fmt.Println("a stranger is refused:", errors.Is(err, natsconn.ErrNotRegistered))
	// Output:
	// inbox stream: KEZ_INBOX
	// alice logged in
	// a stranger is refused: true
}

// aliceWords are a fixed paper backup, so that the example's key is the
// same in every run.
const aliceWords = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon art"

// ExamplePermissions prints what one user may do.
func ExamplePermissions() {
	key, err := kez.ParsePublicKey("UAMX62ZD4FWIKMWGVPEDR6WNL2TYTPQMO2ZJEAZUAON7VCZ5G2GWCXLM")
	if err != nil {
		log.Fatal(err)
	}
	p := callout.Permissions(key, "")
	fmt.Println("publish:")
	for _, s := range p.Pub.Allow {
		fmt.Println(" ", s)
	}
	fmt.Println("subscribe:")
	for _, s := range p.Sub.Allow {
		fmt.Println(" ", s)
	}
	// Output:
	// publish:
	//   kez.v1.send.*.UAMX62ZD4FWIKMWGVPEDR6WNL2TYTPQMO2ZJEAZUAON7VCZ5G2GWCXLM
	//   kez.v1.msend.UAMX62ZD4FWIKMWGVPEDR6WNL2TYTPQMO2ZJEAZUAON7VCZ5G2GWCXLM
	//   kez.v1.consumer.UAMX62ZD4FWIKMWGVPEDR6WNL2TYTPQMO2ZJEAZUAON7VCZ5G2GWCXLM
	//   kez.v1.pull.UAMX62ZD4FWIKMWGVPEDR6WNL2TYTPQMO2ZJEAZUAON7VCZ5G2GWCXLM
	//   kez.v1.ack.UAMX62ZD4FWIKMWGVPEDR6WNL2TYTPQMO2ZJEAZUAON7VCZ5G2GWCXLM
	//   kez.v1.p2p.*
	//   _INBOX.*.>
	// subscribe:
	//   _INBOX.UAMX62ZD4FWIKMWGVPEDR6WNL2TYTPQMO2ZJEAZUAON7VCZ5G2GWCXLM.>
	//   kez.v1.deliver.UAMX62ZD4FWIKMWGVPEDR6WNL2TYTPQMO2ZJEAZUAON7VCZ5G2GWCXLM.>
	//   kez.v1.p2p.UAMX62ZD4FWIKMWGVPEDR6WNL2TYTPQMO2ZJEAZUAON7VCZ5G2GWCXLM
}
