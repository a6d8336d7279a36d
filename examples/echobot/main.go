// Command echobot is a KEZ chat bot in under 60 lines: it logs in with an
// identity made by the kez CLI and answers every text message with the same
// text, to anyone, contact or not. It shows the whole receiving side of the
// SDK: kez.LoadIdentity, chat.Open, Client.Run and Client.SendKey.
//
//	. /tmp/kez-dev/env                      # a dev stack: go run ./examples/devstack --dir /tmp/kez-dev
//	export KEZ_HOME=/tmp/echo
//	go run ./cmd/kez init --yes && go run ./cmd/kez register echo
//	go run ./examples/echobot               # then, as another user: kez send echo hello
package main

import (
	"context"
	"log"
	"os"
	"os/signal"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/kez"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Getenv); err != nil {
		log.Fatal(err)
	}
}

// run answers messages until ctx ends; getenv supplies KEZ_HOME, NATS_URL
// and KEZ_SERVER.
func run(ctx context.Context, getenv func(string) string) error {
	home := getenv("KEZ_HOME")
	id, err := kez.LoadIdentity(home, nil) // nil: an identity saved without a passphrase
	if err != nil {
		return err
	}
	// The chat-server names the handle domain and the sig-server.
	c, err := chat.Open(ctx, chat.Config{Client: client.Config{
		Identity: id, Home: home, NATSURL: getenv("NATS_URL"), ServerURL: getenv("KEZ_SERVER"),
	}})
	if err != nil {
		return err
	}
	defer c.Close()
	log.Printf("echobot %s is listening", id.PublicKey())
	return c.Run(ctx, func(m *chat.Entry) {
		if m.Kind != chat.KindText {
			return
		}
		// SendKey answers by key: the sender need not be a contact.
		if _, err := c.SendKey(ctx, m.From, "echo: "+m.Text()); err != nil {
			log.Printf("answering %s: %v", m.Who(), err)
		}
		c.MarkRead(ctx, m)
	})
}
