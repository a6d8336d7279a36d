package chat_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
)

// Alice creates a group, adds bob and writes to it; bob's client learns
// of the group from alice's group-update (and verifies its chain) and
// receives the message. Alice is a contact of bob's, so he is in the
// group at once (see ExampleClient_AcceptGroup for a group from someone
// who is not).
func ExampleClient_SendGroup() {
	st, users, stop := stacktest.ForExample(stacktest.Options{}, "alice", "bob")
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	open := func(u *stacktest.User) *chat.Client {
		id, err := kez.LoadIdentity(u.Home, nil)
		if err != nil {
			log.Fatal(err)
		}
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
	defer bob.Close()
	if _, err := bob.AddContact(ctx, "alice"); err != nil {
		log.Fatal(err)
	}

	g, err := alice.CreateGroup(ctx, "team", "The team")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("created", g.Name, "epoch", g.Epoch)
	if err := alice.AddGroupMembers(ctx, "team", "bob"); err != nil {
		log.Fatal(err)
	}
	if _, err := alice.SendGroup(ctx, "team", "hello team"); err != nil {
		log.Fatal(err)
	}

	// Bob receives the group (its chain verified) and the message.
	got := make(chan *chat.Entry, 1)
	rctx, stopRun := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- bob.Run(rctx, func(m *chat.Entry) {
			if m.Group != "" {
				got <- m
			}
		})
	}()
	m := <-got
	stopRun()
	<-done
	fmt.Printf("bob got in %s from %s: %s\n", m.Group, m.Who(), m.Text())
	groups, err := bob.Groups(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, g := range groups {
		fmt.Println("bob is in", g.Name, "as", g.Role, "with", len(g.Members), "members, epoch", g.Epoch)
	}
	// Output:
	// created team@kez.test epoch 1
	// bob got in team@kez.test from alice@kez.test: hello team
	// bob is in team@kez.test as member with 2 members, epoch 2
}
