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

// Mallory, who is no contact of bob's, adds him to a group and writes to
// it: bob's client pins the group as an invitation and keeps its
// messages as requests, out of his inbox, until he accepts it.
func ExampleClient_AcceptGroup() {
	st, users, stop := stacktest.ForExample(stacktest.Options{}, "mallory", "bob")
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
	mallory, bob := open(users[0]), open(users[1])
	defer mallory.Close()
	defer bob.Close()

	if _, err := mallory.CreateGroup(ctx, "deals", ""); err != nil {
		log.Fatal(err)
	}
	if err := mallory.AddGroupMembers(ctx, "deals", "bob"); err != nil {
		log.Fatal(err)
	}
	if _, err := mallory.SendGroup(ctx, "deals", "a deal for you"); err != nil {
		log.Fatal(err)
	}

	// Bob receives until the message is stored.
	rctx, stopRun := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- bob.Run(rctx, func(m *chat.Entry) {
			if m.Group != "" {
				stopRun()
			}
		})
	}()
	<-done
	groups, err := bob.Groups(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, g := range groups {
		fmt.Println(g.Name, "invited:", g.Invited, "by mallory:", g.InvitedBy == users[0].Key)
	}
	inbox, err := bob.Inbox(ctx, false)
	if err != nil {
		log.Fatal(err)
	}
	requests, err := bob.Requests(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("inbox:", len(inbox), "messages; requests:", requests[0].Text(), "in", requests[0].Group)

	if err := bob.AcceptGroup(ctx, "deals@kez.test"); err != nil {
		log.Fatal(err)
	}
	if inbox, err = bob.Inbox(ctx, false); err != nil {
		log.Fatal(err)
	}
	fmt.Println("accepted; inbox:", inbox[0].Text())
	// Output:
	// deals@kez.test invited: true by mallory: true
	// inbox: 0 messages; requests: a deal for you in deals@kez.test
	// accepted; inbox: a deal for you
}
