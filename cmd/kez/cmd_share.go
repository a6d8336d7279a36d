package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/cmd/kez/internal/filewords"
	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/group"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/libp2p/go-libp2p"
	"github.com/nats-io/nats.go"
)

func init() {
	register(&command{
		name:    "share",
		args:    "PATH [--to HANDLE]… [--group NAME] [--name NAME] [--ticket [--ticket-ttl D]] [--nats URL] [--server URL] [--sig-server URL] [--home DIR] [--verbose]",
		summary: "share a file, publicly or privately with the named handles",
		help: `
Shares the file at PATH: it is hashed into a content address (CID),
recorded in your share index (KEZ_HOME/shares.db) and listed in a new
link of your sigchain, so anyone can see it with "kez files @you" even
while you are offline. The file is not copied: keep it where it is.
Others fetch it from your machine, peer to peer, while you run "kez serve".

--to HANDLE (repeatable) shares it privately: it is encrypted with a fresh
key that only those handles (and you) can unwrap; everyone else sees
neither its name nor its contents, and your machine sends it to their
keys only. A handle that revoked a device and has not rotated its
encryption key since is refused (that device could open the file); your
own key, in that state, is rotated first. --name NAME shares it under
another name (default: the file's own). Sharing a name you already share
replaces that file.

--group NAME shares it privately with the people who are members of that
group now (NAME@domain, or NAME for a group of your domain; you must be
one of them), however many: it is encrypted with a fresh key, your
sigchain lists it for the group without its name, and the key, with its
name, goes to the members in the group (a message only the present
members can read; "kez files --group NAME" lists what was shared there,
"kez fetch --group NAME FILE" fetches it). Your machine sends it only to
those who are still members: someone added later never gets the key and
is refused, and someone removed is refused from the removal on (within
a minute). --group and --to do not combine.

If the file changes on disk, it is no longer served (fetchers are told to
ask you); run kez share again to publish the new version.

--ticket also prints a ticket for the file (see kez help ticket): a line
that lets anyone (for a private file: its recipients) fetch it with
"kez fetch TICKET", without an account, for --ticket-ttl (default 168h).`,
		flags: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			var cf chatFlags
			var name string
			var to stringList
			var grp string
			var ticket bool
			var ticketTTL time.Duration
			cf.declare(fs, true) // --nats: a share to a group sends its key there
			fs.BoolVar(&ticket, "ticket", false, "also print a ticket to fetch the file without an account")
			fs.DurationVar(&ticketTTL, "ticket-ttl", files.DefaultTicketTTL, "how long the --ticket works (at most 8760h)")
			fs.Var(&to, "to", "share privately with this handle (repeatable)")
			fs.StringVar(&grp, "group", "", "share privately with the members of this group")
			fs.StringVar(&name, "name", "", "share under this name (default: the file's name)")
			return func(ctx context.Context, args []string) error {
				if len(args) != 1 {
					return usagef("share takes one PATH, got %d arguments", len(args))
				}
				if grp != "" && len(to) > 0 {
					return usagef("--group and --to do not combine: share to a group or to handles")
				}
				if ticket && grp != "" {
					return usagef("--ticket and --group do not combine: the group's members fetch with kez fetch --group")
				}
				if !ticket {
					ticketTTL = 0
				} else if err := checkTTL(ticketTTL, "--ticket-ttl"); err != nil {
					return err
				}
				return runShare(ctx, e, cf, args[0], grp, ticketTTL, []files.ShareOption{files.To(to...), files.Named(name)})
			}
		},
	})
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(v string) error {
	if v == "" {
		return errors.New("empty value")
	}
	*l = append(*l, v)
	return nil
}

// sharingSetup is what the file commands need besides the Sharing.
type sharingSetup struct {
	handle string // the user's own handle ("" if not registered)
	srv    servers
}

// openSharing opens the user's file sharing: identity, profile and servers
// as the other commands settle them, the share index in the state folder.
// With nc it signals over that connection; otherwise, when online, it logs
// in to NATS_URL (or --nats) itself on the first fetch or serve.
func (e *env) openSharing(ctx context.Context, f chatFlags, online bool, nc *nats.Conn, listen string, opts ...func(*files.Config)) (*files.Sharing, *sharingSetup, error) {
	acct, err := e.loadAccount(f.home)
	if err != nil {
		return nil, nil, err
	}
	return e.openSharingAs(ctx, f, acct, online, nc, listen, opts...)
}

// openSharingAs is openSharing for an account already loaded.
func (e *env) openSharingAs(ctx context.Context, f chatFlags, acct *account, online bool, nc *nats.Conn, listen string, opts ...func(*files.Config)) (*files.Sharing, *sharingSetup, error) {
	srv, err := e.settleServers(ctx, f.sf, acct.prof, false)
	if err != nil {
		return nil, nil, err
	}
	cfg := files.Config{
		Client:        e.clientConfig(acct, srv, f.verbose),
		NATS:          nc,
		Libp2pOptions: []libp2p.Option{libp2p.UserAgent(userAgent())},
		MaxUploadRate: e.maxUploadRate,
	}
	if cfg.Client.Relays, err = e.relayList(); err != nil {
		return nil, nil, err
	}
	if l := e.envOr(listen, "KEZ_P2P_LISTEN"); l != "" {
		for _, a := range strings.Split(l, ",") {
			if a = strings.TrimSpace(a); a != "" {
				cfg.ListenAddrs = append(cfg.ListenAddrs, a)
			}
		}
	}
	if online && acct.prof.NeedsDevice && acct.dev == nil {
		return nil, nil, errNeedsDevice
	}
	// The chain a share appends to is checked against the one pinned in
	// the chat state (docs/spec/chat.md §8.7).
	cc := cfg.Client
	cfg.OwnChain = func(ctx context.Context) (*sigchain.State, error) { return chat.FetchOwnChain(ctx, cc) }
	if cfg.Client.Identity == nil {
		// A linked device: the person's encryption keys its other devices
		// sent it open the private files shared with the person.
		if cfg.Keys, err = chat.ReadKeyring(ctx, cfg.Client.Home); err != nil {
			return nil, nil, err
		}
	}
	if online && nc == nil {
		if cfg.Client.NATSURL, err = e.natsURLFor(f); err != nil {
			return nil, nil, err
		}
	}
	for _, o := range opts {
		o(&cfg)
	}
	s, err := files.Open(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	return s, &sharingSetup{handle: acct.prof.handleFor(acct.person), srv: srv}, nil
}

// humanSize writes a byte count the way people read it.
func humanSize(n int64) string { return filewords.Size(n) }

// runShare shares path; with ticketTTL > 0 it prints a ticket for it too.
func runShare(ctx context.Context, e *env, cf chatFlags, path, grp string, ticketTTL time.Duration, opts []files.ShareOption) error {
	if grp != "" {
		return runShareGroup(ctx, e, cf, path, grp, opts)
	}
	s, setup, err := e.openSharing(ctx, cf, false, nil, "")
	if err != nil {
		return err
	}
	defer s.Close()
	sf, err := s.Share(ctx, path, opts...)
	if err != nil {
		return err
	}
	me := "@" + setup.handle
	if setup.handle == "" {
		me = s.Key().String()
	}
	how := "publicly"
	if sf.Private {
		how = "privately with @" + strings.Join(sf.Recipients, ", @") + " (encrypted; no one else can see its name or contents)"
	}
	fmt.Fprintf(e.stdout, "Shared %q %s: %s, CID %s.\n", sf.Name, how, humanSize(sf.Size), sf.CID)
	fmt.Fprintf(e.stdout, "It is listed in your sigchain (kez files %s) and fetched from this machine while you run kez serve:\n", me)
	fmt.Fprintf(e.stdout, "  kez fetch %s %q\n", me, sf.Name)
	if ticketTTL > 0 {
		return printTicket(ctx, e, s, sf.Name, ticketTTL, false)
	}
	return nil
}

// runShareGroup shares the file with the group grp (its chain as the chat
// state pinned and refreshed it) and sends its offer to the group
// (docs/spec/manifest.md §7).
func runShareGroup(ctx context.Context, e *env, cf chatFlags, path, grp string, opts []files.ShareOption) error {
	c, g, err := e.openGroup(ctx, cf, grp)
	if err != nil {
		return err
	}
	defer shutdownChat(c)
	if err := groupUnusable(g); err != nil {
		return aboutGroup(grp, err)
	}
	opts = append(opts, files.ToGroup(files.Group{Name: g.Name, SigServer: g.SigServer, Pin: group.Pin{Group: g.Name, ID: g.ID, Seqno: g.Seqno, Head: g.Head}}))
	s, _, err := e.openSharing(ctx, cf, false, c.Conn(), "")
	if err != nil {
		return err
	}
	defer s.Close()
	sf, err := s.Share(ctx, path, opts...)
	if err != nil {
		return aboutGroup(grp, err)
	}
	if _, err := c.SendGroupFile(ctx, g.Name, *sf.Offer); err != nil {
		return worded(err, "%q is listed in your sigchain for %s, but its key could not be sent to the group (%s), so no one can fetch it yet: run the same command again to share it anew",
			sf.Name, g.Name, e.sentence(aboutGroup(grp, err)))
	}
	fmt.Fprintf(e.stdout, "Shared %q privately with the %s of %s (its key went to them in the group; later members and removed ones cannot fetch it): %s, CID %s.\n",
		sf.Name, memberCount(len(g.Members)), g.Name, humanSize(sf.Size), sf.CID)
	fmt.Fprintf(e.stdout, "They fetch it from this machine while you run kez serve:\n")
	fmt.Fprintf(e.stdout, "  kez fetch --group %s %q\n", g.Name, sf.Name)
	return nil
}
