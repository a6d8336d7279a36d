package chat_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/kez"
)

// A client opened without a NATS URL manages contacts and history only;
// sending by handle needs a contact first. (The online flow is in
// Example_conversation.)
func ExampleOpen() {
	alice, err := kez.FromWords("stairs napkin potato shoulder orient doll afford today physical elephant smoke erase seed smart crew sudden wagon convince episode device shoot prize hover obtain")
	if err != nil {
		log.Fatal(err)
	}
	home, err := os.MkdirTemp("", "kez-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(home)

	ctx := context.Background()
	c, err := chat.Open(ctx, chat.Config{Client: client.Config{Identity: alice, Home: home, Domain: "kez.lat"}})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	contacts, err := c.Contacts(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("contacts:", len(contacts))
	_, err = c.Send(ctx, "bob", "hello")
	fmt.Println(err)
	fmt.Println(errors.Is(err, chat.ErrNotContact))
	// Output:
	// contacts: 0
	// chat: bob@kez.lat is not a contact yet; add it first
	// true
}

// The whole flow against a deployment: pin a contact, send, receive. The
// addresses are what KEZ_SERVER and NATS_URL say (see
// examples/devstack for a local one). This example is compiled, not run.
func Example_conversation() {
	id, err := kez.LoadIdentity(os.Getenv("KEZ_HOME"), nil)
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The chat-server names the handle domain and the sig-server.
	c, err := chat.Open(ctx, chat.Config{Client: client.Config{
		Identity:  id,
		Home:      os.Getenv("KEZ_HOME"),
		NATSURL:   os.Getenv("NATS_URL"),
		ServerURL: os.Getenv("KEZ_SERVER"),
	}})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	// Pin bob's key and chain (compare ct.Fingerprint() with him, then
	// c.VerifyContact).
	ct, err := c.AddContact(ctx, "bob@kez.lat")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("pinned", ct.Handle, ct.Fingerprint())

	// Send and wait for his signed delivery receipt.
	sent, err := c.Send(ctx, "bob@kez.lat", "hello bob", chat.WaitReceipt())
	var changed *chat.KeyChangedError
	if errors.As(err, &changed) {
		log.Fatalf("not sent: %v", err) // bob's handle now names another key
	}
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("delivered at", sent.DeliveredAt)

	// Fetch what arrived while offline, then print what is new.
	if _, err := c.Sync(ctx); err != nil {
		log.Fatal(err)
	}
	msgs, err := c.Inbox(ctx, false)
	if err != nil {
		log.Fatal(err)
	}
	for _, m := range msgs {
		fmt.Printf("%s: %s\n", m.Who(), m.Text())
	}

	// Or stay online: the handler sees each new message once it is stored.
	err = c.Run(ctx, func(m *chat.Entry) {
		if m.Trust == chat.TrustTrusted {
			fmt.Printf("%s: %s\n", m.Who(), m.Text())
		}
	})
	if err != nil {
		log.Fatal(err)
	}
}
