package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/handles"
)

// fetchedJSON is "kez fetch --json"; fields may be added.
type fetchedJSON struct {
	Name    string                `json:"name"`
	Size    int64                 `json:"size"`
	CID     string                `json:"cid"`
	Private bool                  `json:"private"`
	Path    string                `json:"path"`
	Owner   string                `json:"owner"`
	Route   files.Route           `json:"route"`
	Routes  map[files.Route]int64 `json:"routes"` // bytes received over each route
	Relay   string                `json:"relay"`  // the relay, when one carried bytes; "" otherwise
}

func fetchedJSONOf(f *files.Fetched, who string) fetchedJSON {
	out := fetchedJSON{Name: f.Name, Size: f.Size, CID: f.CID.String(), Private: f.Private, Path: f.Path, Owner: who,
		Route: f.Route, Routes: f.Routes}
	if out.Routes == nil {
		out.Routes = map[files.Route]int64{}
	}
	if f.Relay != nil {
		out.Relay = f.Relay.String()
	}
	return out
}

// pathSentence says which path a fetched file took, e.g. `Fetched
// "notes.txt" (1.2 MiB) from alice@kez.lat over a hole-punched
// connection.`, with the share of each route when it took more than one.
func pathSentence(f *files.Fetched, who string) string {
	s := fmt.Sprintf("Fetched %q (%s) from %s %s", f.Name, humanSize(f.Size), who, routeWords(f, f.Route))
	if len(f.Routes) > 1 {
		var parts []string
		for _, r := range []files.Route{files.RouteDirect, files.RouteHolePunched, files.RouteRelayed} {
			if n, ok := f.Routes[r]; ok {
				parts = append(parts, humanSize(n)+" "+routeWords(f, r))
			}
		}
		s += " (" + strings.Join(parts, ", ") + ")"
	}
	return s + "."
}

// routeWords words one route: "directly", "over a hole-punched
// connection", "through the relay ADDR".
func routeWords(f *files.Fetched, r files.Route) string {
	switch r {
	case files.RouteHolePunched:
		return "over a hole-punched connection"
	case files.RouteRelayed:
		if f.Relay != nil {
			return "through the relay " + f.Relay.String()
		}
		return "through a relay"
	}
	return "directly"
}

// relayList returns the relays the user named: the --relay flags, else
// KEZ_RELAYS (comma-separated); nil leaves them to the chat-server's
// /v1/info. "none" alone means no relays. Each is checked as /v1/info's
// relays are.
func (e *env) relayList() ([]string, error) {
	list := []string(e.relays)
	from := "--relay"
	if len(list) == 0 {
		from = "KEZ_RELAYS"
		for _, r := range strings.Split(e.getenv("KEZ_RELAYS"), ",") {
			if r = strings.TrimSpace(r); r != "" {
				list = append(list, r)
			}
		}
	}
	if len(list) == 0 {
		return nil, nil
	}
	if slices.Contains(list, client.NoRelays) {
		if len(list) > 1 {
			return nil, usagef("%s: none means no relay, so it goes alone", from)
		}
		return list, nil
	}
	out := make([]string, 0, len(list))
	for _, r := range list {
		c, err := handles.ParseRelay(r)
		if err != nil {
			return nil, usagef("%s %s is not a relay address: a multiaddr ending in /p2p/<the relay's peer id> is", from, r)
		}
		out = append(out, c)
	}
	return out, nil
}

// unreachableSentence words a fetch that found no path to the owner.
func unreachableSentence(u *files.UnreachableError) string {
	who := u.Owner + "'s device"
	if u.Device != "" {
		who = fmt.Sprintf("%s %q", who, u.Device)
	}
	tried := fmt.Sprintf("none of the %d addresses it gave", u.Addrs)
	if u.Addrs == 1 {
		tried = "the one address it gave"
	}
	switch {
	case u.Relays == 0:
		return fmt.Sprintf("%s is online but cannot be reached: %s answered, and it uses no relay; its network blocks incoming connections, so ask them to use a relay (kez serve --relay ADDR, or one their chat-server offers), or add --wait to keep trying", who, tried)
	case u.Relays == 1:
		return fmt.Sprintf("%s is online but cannot be reached: %s answered, even through its relay; the relay may be down or full, so try again later, or add --wait to keep trying", who, tried)
	}
	return fmt.Sprintf("%s is online but cannot be reached: %s answered, even through its %d relays; they may be down or full, so try again later, or add --wait to keep trying", who, tried, u.Relays)
}
