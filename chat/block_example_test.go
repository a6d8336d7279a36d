package chat_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
)

// Blocking is local: it needs no server. From then on what the key's
// person sends is dropped unstored, and sending to them is refused.
func ExampleClient_Block() {
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

	spammer := stacktest.Identity("spammer").PublicKey()
	if err := c.Block(ctx, spammer); err != nil {
		log.Fatal(err)
	}
	blocked, _ := c.Blocked(ctx)
	fmt.Println(len(blocked), blocked[0] == spammer)
	_, err = c.SendKey(ctx, spammer, "hello")
	fmt.Println(errors.Is(err, chat.ErrBlocked))
	fmt.Println(errors.Is(c.Block(ctx, alice.PublicKey()), chat.ErrBlockSelf))

	if err := c.Unblock(ctx, spammer); err != nil {
		log.Fatal(err)
	}
	blocked, _ = c.Blocked(ctx)
	fmt.Println(len(blocked))
	// Output:
	// 1 true
	// true
	// true
	// 0
}
