package callout_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Example wires the callout for a NATS server whose nats.conf includes the
// snippet NATSConfig renders.
func Example() {
	keys, err := callout.LoadOrCreateKeys(filepath.Join(os.TempDir(), "kez-callout-keys"))
	if err != nil {
		log.Fatal(err)
	}
	snippet, err := callout.NATSConfig(keys, callout.ConfigOptions{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(snippet) // the operator adds this to nats.conf and restarts NATS

	dir := &callout.StaticDirectory{} // or the handle registry
	id, _, _ := kez.NewIdentity()
	dir.Set(id.PublicKey(), callout.Entry{Handle: "alice@kez.lat"})

	svc, err := callout.New(callout.Config{Keys: keys, Directory: dir})
	if err != nil {
		log.Fatal(err)
	}
	nc, err := nats.Connect(os.Getenv("NATS_URL"), keys.ServiceOptions()...)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	if err := svc.Listen(nc); err != nil {
		log.Fatal(err)
	}
	defer svc.Close()

	// The chat-server provisions the inbox stream through the callout too.
	pc, err := nats.Connect(os.Getenv("NATS_URL"), keys.ProvisionerOptions()...)
	if err != nil {
		log.Fatal(err)
	}
	defer pc.Close()
	js, _ := jetstream.New(pc)
	if _, err := callout.ProvisionInbox(context.Background(), js, callout.InboxConfig{}); err != nil {
		log.Fatal(err)
	}
}

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
	//   kez.v1.consumer.UAMX62ZD4FWIKMWGVPEDR6WNL2TYTPQMO2ZJEAZUAON7VCZ5G2GWCXLM
	//   kez.v1.pull.UAMX62ZD4FWIKMWGVPEDR6WNL2TYTPQMO2ZJEAZUAON7VCZ5G2GWCXLM
	//   $JS.ACK.KEZ_INBOX.UAMX62ZD4FWIKMWGVPEDR6WNL2TYTPQMO2ZJEAZUAON7VCZ5G2GWCXLM.>
	//   kez.v1.p2p.*
	//   _INBOX.*.>
	// subscribe:
	//   _INBOX.UAMX62ZD4FWIKMWGVPEDR6WNL2TYTPQMO2ZJEAZUAON7VCZ5G2GWCXLM.>
	//   kez.v1.deliver.UAMX62ZD4FWIKMWGVPEDR6WNL2TYTPQMO2ZJEAZUAON7VCZ5G2GWCXLM.>
	//   kez.v1.p2p.UAMX62ZD4FWIKMWGVPEDR6WNL2TYTPQMO2ZJEAZUAON7VCZ5G2GWCXLM
}
