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
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
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
	// chat: bob@kez.lat is not a contact
	// true
}

// The whole flow: alice pins bob's key and sends; bob, online, receives
// and answers; alice fetches the answer. A deployment of its own runs for
// the example; a program is given the addresses (KEZ_SERVER and NATS_URL,
// see examples/devstack for a local one) and the user's KEZ_HOME.
func Example_conversation() {
	st, users, stop := stacktest.ForExample(stacktest.Options{}, "alice", "bob")
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	open := func(u *stacktest.User) *chat.Client {
		id, err := kez.LoadIdentity(u.Home, nil)
		if err != nil {
			log.Fatal(err)
		}
		// The chat-server names the handle domain and the sig-server.
		c, err := chat.Open(ctx, chat.Config{Client: client.Config{
			Identity: id, Home: u.Home, NATSURL: st.NATSURL, ServerURL: st.ServerURL,
		}})
		if err != nil {
			log.Fatal(err)
		}
		return c
	}
	alice, bob := open(users[0]), open(users[1])
	defer alice.Close()

	// Each pins the other's key and chain (then compares fingerprints
	// in person and calls VerifyContact).
	ct, err := alice.AddContact(ctx, "bob")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("alice pinned", ct.Handle)
	if _, err := bob.AddContact(ctx, "alice"); err != nil {
		log.Fatal(err)
	}

	// Bob stays online: his handler sees each new message once stored.
	got := make(chan *chat.Entry, 1)
	running := make(chan error, 1)
	go func() { running <- bob.Run(ctx, func(m *chat.Entry) { got <- m }) }()

	// Alice sends and waits for bob's signed delivery receipt.
	sent, err := alice.Send(ctx, "bob", "hello bob", chat.WaitReceipt())
	var changed *chat.KeyChangedError
	if errors.As(err, &changed) {
		log.Fatalf("not sent: %v", err) // bob's handle now names another key
	}
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("delivered:", !sent.DeliveredAt.IsZero())
	m := <-got
	fmt.Printf("bob got from %s: %s\n", m.Who(), m.Text())

	// Bob answers, then shuts down: his Run loop returns ErrClosed.
	if _, err := bob.Send(ctx, "alice", "hi alice"); err != nil {
		log.Fatal(err)
	}
	if err := bob.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("bob's Run:", <-running)

	// Alice fetches what arrived, then reads what is new.
	if _, err := alice.Sync(ctx); err != nil {
		log.Fatal(err)
	}
	msgs, err := alice.Inbox(ctx, false)
	if err != nil {
		log.Fatal(err)
	}
	for _, m := range msgs {
		fmt.Printf("alice got from %s: %s\n", m.Who(), m.Text())
	}
	// Output:
	// alice pinned bob@kez.test
	// delivered: true
	// bob got from alice@kez.test: hello bob
	// bob's Run: chat: the client is closed
	// alice got from bob@kez.test: hi alice
}

// A contact's device added or revoked, as Config.OnContactDevice is told
// of it and a person reads it.
func ExampleContactDevice_String() {
	fmt.Println(chat.ContactDevice{Handle: "bob@kez.lat", Name: "phone"})
	fmt.Println(chat.ContactDevice{Handle: "bob@kez.lat", Name: "old laptop", Revoked: true})
	// Output:
	// @bob@kez.lat added a device, "phone" (signed by their key).
	// @bob@kez.lat revoked a device, "old laptop" (signed by their key).
}
