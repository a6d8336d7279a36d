package main

import (
	"slices"
	"strings"

	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/cmd/kez/internal/filewords"
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

// pathSentence says which path a fetched file took (filewords.Fetched).
func pathSentence(f *files.Fetched, who string) string { return filewords.Fetched(f, who) }

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
	return filewords.Unreachable(u) + ", or add --wait to keep trying"
}
