package main

import (
	"strings"
	"testing"

	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/files/format"
	ma "github.com/multiformats/go-multiaddr"
)

func TestPathSentence(t *testing.T) {
	relay := ma.StringCast("/ip4/198.51.100.7/tcp/4002/p2p/12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK")
	f := func(r files.Route, routes map[files.Route]int64, rel ma.Multiaddr) *files.Fetched {
		return &files.Fetched{Entry: format.Entry{Name: "notes.txt", Size: 1258291}, Route: r, Routes: routes, Relay: rel}
	}
	cases := []struct {
		f    *files.Fetched
		want string
	}{
		{f(files.RouteDirect, nil, nil), `Fetched "notes.txt" (1.2 MiB) from alice@kez.lat directly.`},
		{f(files.RouteHolePunched, map[files.Route]int64{files.RouteHolePunched: 1258291}, nil), `Fetched "notes.txt" (1.2 MiB) from alice@kez.lat over a hole-punched connection.`},
		{f(files.RouteRelayed, nil, relay), `Fetched "notes.txt" (1.2 MiB) from alice@kez.lat through the relay ` + relay.String() + `.`},
		{f(files.RouteRelayed, nil, nil), `Fetched "notes.txt" (1.2 MiB) from alice@kez.lat through a relay.`},
		{f(files.RouteHolePunched, map[files.Route]int64{files.RouteHolePunched: 1 << 20, files.RouteRelayed: 209715}, relay),
			`Fetched "notes.txt" (1.2 MiB) from alice@kez.lat over a hole-punched connection (1.0 MiB over a hole-punched connection, 204.8 KiB through the relay ` + relay.String() + `).`},
	}
	for _, c := range cases {
		if got := pathSentence(c.f, "alice@kez.lat"); got != c.want {
			t.Errorf("got  %s\nwant %s", got, c.want)
		}
	}
}

func TestUnreachableSentence(t *testing.T) {
	cases := []struct {
		u    files.UnreachableError
		want string
	}{
		{files.UnreachableError{Owner: "alice@kez.lat", Addrs: 1}, "alice@kez.lat's device is online but cannot be reached: the one address it gave answered"},
		{files.UnreachableError{Owner: "alice@kez.lat", Device: "laptop", Addrs: 3, Relays: 1}, `alice@kez.lat's device "laptop" is online but cannot be reached: none of the 3 addresses it gave answered, even through its relay`},
		{files.UnreachableError{Owner: "alice@kez.lat", Addrs: 4, Relays: 2}, "even through its 2 relays"},
	}
	for _, c := range cases {
		if got := unreachableSentence(&c.u); !strings.Contains(got, c.want) {
			t.Errorf("got %q, want it to contain %q", got, c.want)
		}
	}
}
