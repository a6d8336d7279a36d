package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/files/format"
)

func init() {
	register(&command{
		name:    "fetch",
		args:    "(HANDLE NAME|CID | --group GROUP NAME|CID | TICKET) [-o PATH] [--wait [--timeout D]] [--force] [--json] [--listen ADDRS] [--nats URL] [--server URL] [--sig-server URL] [--home DIR] [--verbose]",
		summary: "download a file someone shares, peer to peer, verified",
		help: `
Downloads the file HANDLE shares under NAME (or with content address CID)
straight from their machine: your client asks theirs over NATS where it
listens (a signed answer), connects to their key's PeerID (the connection
itself proves it is them), and checks every 256 KiB chunk against the CID
before writing it. The file appears at its path only once all of it is
verified (and, if it was shared privately with you, decrypted); until then
it grows in PATH.kez-partial (a private file is decrypted as it arrives,
each chunk checked first, so PATH.kez-partial holds plaintext and no
encrypted copy is kept). If the transfer is interrupted (Ctrl-C, lost
connection), run the same command again: it resumes where it stopped.
A public file also comes from people who re-serve it (kez serve
--reshare) whom the owner's machine names: different chunks from each at
once, each checked against the CID.

The connection is direct when their machine can be dialled; behind home
routers it is made through a relay their kez holds a slot with (one
their chat-server offers, or kez serve --relay), and hole punching then
tries to make it direct. The last line says which path the file took:
"directly", "over a hole-punched connection" or "through the relay
ADDR" (a relay forwards only encrypted bytes).

HANDLE must be online (running kez serve) and reachable. If they are not,
--wait keeps asking until they are, for at most --timeout (default: until
you press Ctrl-C).

-o PATH is where to save it (a folder puts it there under its shared name;
default: its shared name in the current folder). An existing file is kept
unless you pass --force. A progress line is shown on a terminal (for a
private file it counts the encrypted bytes, and says so). --json prints
what was fetched as JSON instead of sentences (name, size, cid, private,
path, owner, route, routes: bytes per route, relay).

--group GROUP fetches a file someone shared with the group GROUP (kez
share --group): NAME or CID names one of the files offered in the group
("kez files --group GROUP" lists them; of several offers of one name, the
latest). Your kez first takes what waits for you, reads the offer (which
holds the file's key and its owner) and fetches the file from its
owner's machine, which sends it only to people who were members when it
was shared and still are.

TICKET (a line starting "kezt1", from kez share --ticket or kez ticket)
fetches the file it names without NATS, without being the owner's
contact, and without kez init: the ticket says where the owner's machine
listens and is signed by the owner, and a ticket that expired or was
changed is refused with the reason. Without a KEZ identity the fetch uses
a key made for it, and nothing is written in the state folder. A ticket
for a private file works only for its recipients (run it where your KEZ
identity is). The connection, the progress line, resuming and --json are
as above; --json's owner is then the owner's key.`,
		flags: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			var cf chatFlags
			var out, listen, grp string
			var wait, force, asJSON bool
			var timeout time.Duration
			cf.declare(fs, true)
			fs.StringVar(&out, "o", "", "save to this path or folder (default: the shared name, here)")
			fs.BoolVar(&wait, "wait", false, "wait for the owner to come online")
			fs.DurationVar(&timeout, "timeout", 0, "with --wait, give up after this long (0: never)")
			fs.BoolVar(&force, "force", false, "replace an existing file at the path")
			fs.BoolVar(&asJSON, "json", false, "print JSON")
			fs.StringVar(&grp, "group", "", "fetch a file shared with this group (then give only NAME or CID)")
			fs.StringVar(&listen, "listen", "", "libp2p listen addresses, comma-separated (env KEZ_P2P_LISTEN; default: all interfaces, TCP and QUIC)")
			return func(ctx context.Context, args []string) error {
				if timeout < 0 {
					return usagef("--timeout must not be negative")
				}
				if grp != "" {
					if len(args) != 1 {
						return usagef("fetch --group takes one NAME or CID (the owner is the one who offered it), got %d arguments", len(args))
					}
					return runFetchGroup(ctx, e, cf, listen, grp, args[0], fetchFlags{out, wait, timeout, force, asJSON})
				}
				if len(args) == 1 && isTicket(args[0]) {
					return runFetchTicket(ctx, e, cf, listen, args[0], fetchFlags{out, wait, timeout, force, asJSON})
				}
				if len(args) != 2 {
					return usagef("fetch takes a HANDLE and a NAME or CID (or one TICKET), got %d arguments", len(args))
				}
				return runFetch(ctx, e, cf, listen, args[0], args[1], fetchFlags{out, wait, timeout, force, asJSON})
			}
		},
	})
}

// fetchFlags are the flags of kez fetch that shape one fetch and its report.
type fetchFlags struct {
	out     string
	wait    bool
	timeout time.Duration
	force   bool
	asJSON  bool
}

func runFetch(ctx context.Context, e *env, cf chatFlags, listen, handle, what string, ff fetchFlags) error {
	s, setup, err := e.openSharing(ctx, cf, true, nil, listen)
	if err != nil {
		return err
	}
	defer s.Close()
	return fetchReport(ctx, e, s, setup, handle, what, ff, nil)
}

// runFetchGroup fetches the file offered in the group grp under the name
// (or with the CID) what, with the key its offer gave.
func runFetchGroup(ctx context.Context, e *env, cf chatFlags, listen, grp, what string, ff fetchFlags) error {
	c, g, err := e.openGroup(ctx, cf, grp)
	if err != nil {
		return err
	}
	defer shutdownChat(c)
	offers, err := c.GroupFiles(ctx, g.Name)
	if err != nil {
		return err
	}
	f, ok := pickOffer(offers, what)
	if !ok {
		return worded(nil, "no file named %q (nor with that CID) was offered in %s to you: kez files --group %s lists those that were", what, g.Name, g.Name)
	}
	if f.OwnerHandle == "" {
		return worded(nil, "the one who offered %q (%s) is no longer in %s, and their handle is not known here, so it cannot be fetched", f.Offer.Name, f.Offer.Owner, g.Name)
	}
	s, setup, err := e.openSharing(ctx, cf, true, c.Conn(), listen)
	if err != nil {
		return err
	}
	defer s.Close()
	err = fetchReport(ctx, e, s, setup, f.OwnerHandle, f.Offer.CID.String(), ff, &f)
	if errors.Is(err, files.ErrForbidden) {
		return worded(err, "%s will not send %q to you: it goes only to people who were members of %s when it was shared and still are", f.OwnerHandle, f.Offer.Name, g.Name)
	}
	if errors.Is(err, files.ErrOfferMismatch) || errors.Is(err, files.ErrNotShared) {
		return worded(err, "%s does not share %q with %s (any more): their list of shared files does not have what the offer says, so nothing was fetched", f.OwnerHandle, f.Offer.Name, g.Name)
	}
	return err
}

// pickOffer returns the latest offer named what, else the latest with
// that CID.
func pickOffer(offers []chat.GroupFile, what string) (chat.GroupFile, bool) {
	for i := len(offers) - 1; i >= 0; i-- {
		if offers[i].Offer.Name == what {
			return offers[i], true
		}
	}
	c, err := format.ParseCID(what)
	if err != nil {
		return chat.GroupFile{}, false
	}
	for i := len(offers) - 1; i >= 0; i-- {
		if offers[i].Offer.CID.Equals(c) {
			return offers[i], true
		}
	}
	return chat.GroupFile{}, false
}

// fetchReport fetches what from handle with s (with the key of offer, if
// given) and reports it.
func fetchReport(ctx context.Context, e *env, s *files.Sharing, setup *sharingSetup, handle, what string, ff fetchFlags, offer *chat.GroupFile) error {
	who := fullHandle(handle, setup.srv.domain)
	var opts []files.FetchOption
	name := what
	if offer != nil {
		opts = append(opts, files.WithFileKey(offer.Offer))
		name = offer.Offer.Name
	}
	return reportFetch(e, ff, fetchRun{
		name: name, who: who, owner: who,
		waiting: who + " is offline or cannot be reached; waiting for them (Ctrl-C to stop)…",
		fetch: func(more []files.FetchOption) (*files.Fetched, error) {
			return s.Fetch(ctx, handle, what, ff.out, append(opts, more...)...)
		},
		refused: func(err error) error {
			if offer != nil && (errors.Is(err, files.ErrForbidden) || errors.Is(err, files.ErrOfferMismatch) || errors.Is(err, files.ErrNotShared)) {
				return err // worded by the caller, about the group
			}
			return aboutHandle(handle, err)
		},
	})
}

// fetchRun is one fetch for reportFetch: by handle, in a group, or with
// a ticket.
type fetchRun struct {
	name    string // what the progress line calls the file
	who     string // the owner in the path sentence
	owner   string // the owner in --json
	waiting string // printed when --wait starts waiting
	// fetch fetches with the options reportFetch adds (wait, overwrite,
	// progress).
	fetch func(opts []files.FetchOption) (*files.Fetched, error)
	// refused words an error that is not a transfer cut short.
	refused func(err error) error
}

// reportFetch runs r with the options of ff, drawing a progress line on a
// terminal, and reports the outcome: the saved file and the path its
// bytes took (or --json), how to resume a transfer cut short, else
// r.refused's sentence.
func reportFetch(e *env, ff fetchFlags, r fetchRun) error {
	var opts []files.FetchOption
	if ff.wait {
		opts = append(opts, files.WithWait(ff.timeout, func(attempt int) {
			if attempt == 1 {
				fmt.Fprintln(e.stderr, r.waiting)
			}
		}))
	}
	if ff.force {
		opts = append(opts, files.WithOverwrite())
	}
	var bar *progressLine
	if e.isTerminal {
		bar = &progressLine{w: e.stderr, name: r.name, now: e.now}
		if bar.now == nil {
			bar.now = time.Now
		}
	}
	var verified, total int64
	started := false
	opts = append(opts, files.WithProgress(func(v, t int64) {
		verified, total, started = v, t, true
		if bar != nil {
			bar.update(v, t)
		}
	}))
	got, err := r.fetch(opts)
	if bar != nil {
		if err == nil && got.Private {
			// The bar counted the encrypted blob; the line below gives
			// the decrypted size.
			bar.note = "(encrypted)"
		}
		bar.finish()
	}
	switch {
	case err == nil:
	case started && verified < total && resumable(err):
		how := "broke off"
		if errors.Is(err, context.Canceled) {
			how = "was interrupted"
		}
		if verified == 0 {
			return worded(err, "the fetch %s before any of it was verified: run the same command to start again", how)
		}
		return worded(err, "the fetch %s with %s of %s verified, which is kept: run the same command to resume", how, humanSize(verified), humanSize(total))
	default:
		return r.refused(err)
	}
	if ff.asJSON {
		return json.NewEncoder(e.stdout).Encode(fetchedJSONOf(got, r.owner))
	}
	how := "verified against its CID"
	if got.Private {
		how = "verified and decrypted"
	}
	fmt.Fprintf(e.stdout, "Saved %q (%s, %s) to %s\n", got.Name, humanSize(got.Size), how, visiblePath(got.Path))
	fmt.Fprintln(e.stdout, pathSentence(got, r.who))
	return nil
}

// resumable reports whether a fetch that failed after its transfer
// started can go on from what it verified: it was interrupted, or the
// connection broke, rather than refused or sent wrong data.
func resumable(err error) bool {
	return !errors.Is(err, files.ErrCorrupt) && !errors.Is(err, files.ErrForbidden) &&
		!errors.Is(err, files.ErrNotFound) && !errors.Is(err, files.ErrBusy) && !errors.Is(err, format.ErrDecrypt)
}

// progressLine draws a one-line progress display with carriage returns:
// name, bytes, percentage and rate, at most ten times a second.
type progressLine struct {
	w     io.Writer
	name  string
	note  string // after the figures on the final line, e.g. "(encrypted)"
	now   func() time.Time
	start time.Time
	last  time.Time
	drawn bool
	done  int64
	total int64
}

func (p *progressLine) update(verified, total int64) {
	t := p.now()
	if p.start.IsZero() {
		p.start = t
	}
	p.done, p.total = verified, total
	if p.drawn && t.Sub(p.last) < 100*time.Millisecond && verified < total {
		return
	}
	p.last, p.drawn = t, true
	fmt.Fprintf(p.w, "\r%s", p.text(t))
}

func (p *progressLine) text(t time.Time) string {
	pct := 100.0
	if p.total > 0 {
		pct = float64(p.done) * 100 / float64(p.total)
	}
	rate := ""
	if d := t.Sub(p.start).Seconds(); d > 0 {
		rate = "  " + humanSize(int64(float64(p.done)/d)) + "/s"
	}
	note := ""
	if p.note != "" {
		note = "  " + p.note
	}
	const width = 24
	fill := int(pct / 100 * width)
	return fmt.Sprintf("%s [%s%s] %s / %s %5.1f%%%s%s\x1b[K", p.name, strings.Repeat("=", fill), strings.Repeat(" ", width-fill),
		humanSize(p.done), humanSize(p.total), pct, rate, note)
}

// finish ends the line, if one was drawn.
func (p *progressLine) finish() {
	if p.drawn {
		fmt.Fprintf(p.w, "\r%s\n", p.text(p.now()))
	}
}
