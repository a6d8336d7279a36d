package chat_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/internal/testenv/uifixture"
	"github.com/kez-lat/kez-chat/kez"
)

// A UI draws its conversation list from the state folder before anything
// else is opened (ReadConversations), then opens the client and pages
// through the conversation the user picks, newest page first. (The home
// here is a test fixture with three contacts.)
func ExampleClient_Conversations() {
	home, err := os.MkdirTemp("", "kez-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(home)
	if _, err := uifixture.Write(home, uifixture.Options{Contacts: 3, Messages: 7}); err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()

	list, err := chat.ReadConversations(ctx, home)
	if err != nil {
		log.Fatal(err)
	}
	for _, cv := range list {
		fmt.Printf("%s (%d unread): %s\n", cv.Handle, cv.Unread, cv.Last.Text())
	}

	id, err := kez.LoadIdentity(home, nil)
	if err != nil {
		log.Fatal(err)
	}
	c, err := chat.Open(ctx, chat.Config{Client: client.Config{Identity: id, Home: home, Domain: "kez.lat"}})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	list, err = c.Conversations(ctx)
	if err != nil {
		log.Fatal(err)
	}
	q := chat.PageQuery{Peer: list[0].Peer, Limit: 2}
	for {
		page, err := c.Page(ctx, q)
		if err != nil {
			log.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		fmt.Println("page:")
		for _, e := range page {
			fmt.Printf("  %s %s\n", e.SentAt.UTC().Format("15:04"), e.Text())
		}
		q.Before = page[0]
	}
	// Output:
	// ada@kez.lat (1 unread): message 3 of 3 with ada@kez.lat
	// bob@kez.lat (0 unread): message 2 of 2 with bob@kez.lat
	// carol@kez.lat (0 unread): message 2 of 2 with carol@kez.lat
	// page:
	//   11:50 message 2 of 3 with ada@kez.lat
	//   12:00 message 3 of 3 with ada@kez.lat
	// page:
	//   11:40 message 1 of 3 with ada@kez.lat
}
