package main

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"strings"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/natsconn"
	"github.com/nats-io/nats.go"
)

func init() {
	register(&command{
		name:    "serve",
		args:    "[--reshare] [--listen ADDRS] [--nats URL] [--server URL] [--sig-server URL] [--home DIR] [--verbose]",
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

--reshare (env KEZ_RESHARE=1) also serves, to anyone, the public files you
fetched ("kez files --fetched" lists them) while they are unchanged on
disk, and tells their owners' machines, which name you to the next
fetchers so that they pull from you too. Their owners and those fetchers
learn that you hold the file and where your machine listens. Private
files are never re-served.

--listen (env KEZ_P2P_LISTEN) sets the libp2p listen addresses, comma-separated
multiaddrs (default: every interface, TCP and QUIC, ports the system
picks). Your machine must be reachable at one of them by those who fetch.`,
		flags: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			var cf chatFlags
			var listen string
			var reshare bool
			cf.declare(fs, true)
			fs.BoolVar(&reshare, "reshare", false, "also serve the public files you fetched, to anyone (env KEZ_RESHARE)")
			fs.StringVar(&listen, "listen", "", "libp2p listen addresses, comma-separated (env KEZ_P2P_LISTEN)")
			return func(ctx context.Context, args []string) error {
				if len(args) > 0 {
					return usagef("serve takes no arguments, got %q", args)
				}
				if !reshare && e.getenv("KEZ_RESHARE") != "" {
					var err error
					if reshare, err = strconv.ParseBool(e.getenv("KEZ_RESHARE")); err != nil {
						return usagef("KEZ_RESHARE is %q; set it to 1 or 0", e.getenv("KEZ_RESHARE"))
					}
				}
				return runServe(ctx, e, cf, listen, reshare)
			}
		},
	})
}

func runServe(ctx context.Context, e *env, cf chatFlags, listen string, reshare bool) error {
	c, err := e.openChat(ctx, cf, true)
	if err != nil {
		return err
	}
	defer c.Close()
	s, setup, err := e.openSharing(ctx, cf, true, c.Conn(), listen, func(c *files.Config) { c.Reshare = reshare })
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
	if reshare {
		fetched, err := s.Fetched(ctx)
		if err != nil {
			return err
		}
		n := 0
		for _, f := range fetched {
			if !f.Changed {
				n++
			}
		}
		out.line("Re-serving %d public file(s) you fetched, to anyone who asks.", n)
	}
	out.line("Serving %d shared file(s) and receiving messages; Ctrl-C stops.", len(shared))

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
