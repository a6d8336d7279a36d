package files_test

import (
	"fmt"

	"github.com/kez-lat/kez-chat/files"
)

// The relays a chat-server offers (client.Config.Relays) become the node's
// relays: one entry per relay, with each of its addresses.
func ExampleParseRelays() {
	relays, err := files.ParseRelays([]string{
		"/ip4/198.51.100.7/tcp/4002/p2p/12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK",
		"/ip4/198.51.100.7/udp/4002/quic-v1/p2p/12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, r := range relays {
		fmt.Println(r.ID, r.Addrs)
	}
	// Output: 12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK [/ip4/198.51.100.7/tcp/4002 /ip4/198.51.100.7/udp/4002/quic-v1]
}

func ExampleUnreachableError() {
	err := error(&files.UnreachableError{Owner: "alice@kez.lat", Addrs: 3, Relays: 1})
	fmt.Println(err)
	// Output: files: cannot reach alice@kez.lat's device: no address answered (tried 3, through 1 relay)
}
