package main

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"strings"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/natsconn"
	"github.com/nats-io/nats.go"
)

func init() {
	register(&command{
		name:    "serve",
		args:    "[--listen ADDRS] [--relay ADDR]... [--nats URL] [--server URL] [--sig-server URL] [--home DIR] [--verbose]",
		summary: "stay online: receive messages and serve your shared files",
		help: `
Keeps your client online until you press Ctrl-C (or it gets SIGTERM):

- it answers the people who want to fetch your shared files ("kez fetch
  @you NAME") with where your machine listens, signed with your key, and
  sends them the files, peer to peer; a private file only to the keys it
  is shared with;
- it receives your messages and prints those from your contacts as they
  arrive (as "kez inbox --follow" does), and notes message requests and
  held messages.

A shared file that changed on disk since you shared it is not sent; a
sentence names it, and "kez share" publishes the new version. When the
connection to NATS is lost, serve says so, keeps trying, and says when it
is back. --verbose also prints the SDK's log lines.

--listen (env KEZ_P2P_LISTEN) sets the libp2p listen addresses, comma-separated
multiaddrs (default: every interface, TCP and QUIC, ports the system
picks).

Behind a home router or carrier NAT, those who fetch cannot dial you: serve
then keeps a slot with a relay (circuit relay v2, e.g. kez-relay) and
announces its address too; it prints "Reachable through the relay ADDR."
once it has one. Fetchers connect through the relay, and hole punching
then tries to make the connection direct. The relay sees who talks to
whom and how much, never the files: the connection is encrypted end to
end between your key and theirs. The relays are those your chat-server
offers; --relay ADDR (repeatable; env KEZ_RELAYS, comma-separated) names
your own instead, each a multiaddr ending in /p2p/<the relay's peer id>,
and --relay none uses none.`,
		flags: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			var cf chatFlags
			var listen string
			cf.declare(fs, true)
			fs.StringVar(&listen, "listen", "", "libp2p listen addresses, comma-separated (env KEZ_P2P_LISTEN)")
			fs.Var(&e.relays, "relay", "a relay to keep a slot with, multiaddr ending in /p2p/<peer id>; repeat for more, or none (env KEZ_RELAYS; default: those your chat-server offers)")
			return func(ctx context.Context, args []string) error {
				if len(args) > 0 {
					return usagef("serve takes no arguments, got %q", args)
				}
				if _, err := e.relayList(); err != nil {
					return err
				}
				return runServe(ctx, e, cf, listen)
			}
		},
	})
}

func runServe(ctx context.Context, e *env, cf chatFlags, listen string) error {
	c, err := e.openChat(ctx, cf, true)
	if err != nil {
		return err
	}
	defer c.Close()
	s, setup, err := e.openSharing(ctx, cf, true, c.Conn(), listen)
	if err != nil {
		return err
	}
	defer s.Close()
	shared, err := s.Shared(ctx)
	if err != nil {
		return err
	}
	if err := s.StartServing(ctx); err != nil {
		return err
	}
	defer s.StopServing()

	me := "@" + setup.handle
	if setup.handle == "" {
		me = s.Key().String()
	}
	var addrs []string
	for _, a := range s.Addrs() {
		addrs = append(addrs, a.String())
	}
	out := &printer{w: e.stdout}
	note := &printer{w: e.stderr}
	saySessionChanges(ctx, c.Conn(), note, e.natsURL)
	out.line("Online as %s (PeerID %s), listening on %s.", me, s.DeviceKey().PeerID(), strings.Join(addrs, ", "))
	out.line("Serving %d shared file(s) and receiving messages; Ctrl-C stops.", len(shared))
	if node, err := s.Node(); err == nil {
		go sayRelays(ctx, node, out)
	}

	// Messages are received until ctx ends; files are served meanwhile.
	runErr := c.Run(ctx, func(m *chat.Entry) {
		switch m.Trust {
		case chat.TrustTrusted:
			out.print(m)
			if err := c.MarkRead(ctx, m); err != nil {
				note.line("kez serve: %s", e.sentence(err))
			}
		case chat.TrustRequest:
			note.line("A message request from %s: kez inbox --requests", m.Who())
		case chat.TrustHeld:
			note.line("A message from %s is HELD: their key or sigchain changed (kez contacts list)", m.Who())
		}
	})
	if runErr != nil {
		return runErr
	}
	if ctx.Err() == nil {
		return fmt.Errorf("stopped receiving messages unexpectedly; run kez serve again")
	}
	fmt.Fprintln(e.stdout, "Offline.")
	return nil
}

// saySessionChanges tells, in a sentence each, when the connection to NATS
// is lost and when it is back (the client keeps trying meanwhile), for the
// commands that stay online (serve, inbox --follow, chat). The
// connection's own handlers still run first.
func saySessionChanges(ctx context.Context, nc *nats.Conn, note *printer, url string) {
	lost, back := nc.DisconnectErrHandler(), nc.ReconnectHandler()
	nc.SetDisconnectErrHandler(func(conn *nats.Conn, err error) {
		if lost != nil {
			lost(conn, err)
		}
		if err != nil && ctx.Err() == nil { // not the goodbye of Close
			note.line("Lost the connection to NATS at %s; trying again until it is back (meanwhile your messages wait on the server, and no one can fetch from you).", natsconn.RedactURL(url))
		}
	})
	nc.SetReconnectHandler(func(conn *nats.Conn) {
		if back != nil {
			back(conn)
		}
		note.line("Connected to NATS again: receiving messages and serving files.")
	})
}

// sayRelays prints the node's circuit addresses whenever they change: once
// it holds a reservation with a relay ("Reachable through the relay …"),
// and when it lost every one.
func sayRelays(ctx context.Context, node *files.Node, out *printer) {
	var said []string
	for {
		as, changed := node.RelayAddrs()
		if changed == nil {
			return // no relays
		}
		var now []string
		for _, a := range as {
			now = append(now, a.String())
		}
		switch {
		case slices.Equal(now, said):
		case len(now) == 0:
			out.line("Lost the slot with the relay; trying again (meanwhile only those who can dial you directly can fetch from you).")
		case len(now) == 1:
			out.line("Reachable through the relay %s.", now[0])
		default:
			out.line("Reachable through the relays %s.", strings.Join(now, ", "))
		}
		said = now
		select {
		case <-changed:
		case <-ctx.Done():
			return
		}
	}
}
