package relay_test

import (
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"strings"

	"github.com/kez-lat/kez-chat/relay"
	ma "github.com/multiformats/go-multiaddr"
)

// A relay on a loopback port, with a key fixed for the example (keep
// yours in a file: relay.LoadKey). Its addresses end in its peer id:
// what a chat-server's --relay takes.
func ExampleNew() {
	key := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	r, err := relay.New(relay.Config{
		Key:         key,
		Listen:      []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/0")},
		CircuitRate: 1 << 20, // 1 MiB/s each way per circuit
		Logger:      slog.New(slog.DiscardHandler),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer r.Close()
	fmt.Println(r.ID())
	for _, a := range r.Addrs() {
		fmt.Println(strings.HasPrefix(a.String(), "/ip4/127.0.0.1/tcp/"), strings.HasSuffix(a.String(), "/p2p/"+r.ID().String()))
	}
	// Output:
	// 12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN
	// true true
}
