package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/kez"
)

func init() {
	register(&command{
		name:    "ticket",
		args:    "NAME|CID [--ttl D] [--json] [--server URL] [--sig-server URL] [--home DIR] [--verbose]",
		summary: "print a ticket that lets anyone fetch a file you share, without an account",
		help: `
Prints a ticket for the file you share under NAME (or with content
address CID): a line starting "kezt1" that says where your machine
listens, which file, and until when, signed by your key. Whoever has it
runs "kez fetch TICKET" and gets the file from your machine while you run
kez serve, without being your contact and without a KEZ account; every
chunk is still checked against the CID.

The addresses are those your kez serve uses (it records them in your
state folder, and listens on the same ports after a restart), else
circuit addresses through your server's relays. A ticket for a file
shared privately (--to) names no file and helps only its recipients: to
anyone else it shows your key, the file's size and where you listen, not
its name or contents.

--ttl D is how long the ticket works (default 168h, 7 days; at most
8760h, a year). A ticket cannot be withdrawn before then, but unsharing
the file (or changing it) ends every ticket for it. --json prints the
ticket with its details as one JSON object.`,
		flags: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			var cf chatFlags
			var ttl time.Duration
			var asJSON bool
			cf.declare(fs, false)
			fs.DurationVar(&ttl, "ttl", files.DefaultTicketTTL, "how long the ticket works (at most 8760h)")
			fs.BoolVar(&asJSON, "json", false, "print the ticket and its details as JSON")
			return func(ctx context.Context, args []string) error {
				if len(args) != 1 {
					return usagef("ticket takes one NAME or CID, got %d arguments", len(args))
				}
				if err := checkTTL(ttl, "--ttl"); err != nil {
					return err
				}
				s, _, err := e.openSharing(ctx, cf, false, nil, "")
				if err != nil {
					return err
				}
				defer s.Close()
				return printTicket(ctx, e, s, args[0], ttl, asJSON)
			}
		},
	})
}

// checkTTL refuses a ticket life out of range, naming the flag.
func checkTTL(ttl time.Duration, flagName string) error {
	if ttl <= 0 || ttl > files.MaxTicketTTL {
		return usagef("%s must be more than 0 and at most %s (a year), not %s", flagName, files.MaxTicketTTL, ttl)
	}
	return nil
}

// ticketJSON is what "kez ticket --json" prints.
type ticketJSON struct {
	Ticket  string   `json:"ticket"`
	Name    string   `json:"name,omitempty"`
	CID     string   `json:"cid"`
	Size    int64    `json:"size"`
	Private bool     `json:"private"`
	Expires string   `json:"expires"`
	Device  string   `json:"device"`
	Addrs   []string `json:"addrs"`
}

// printTicket makes a ticket for what and prints it with how to use it.
func printTicket(ctx context.Context, e *env, s *files.Sharing, what string, ttl time.Duration, asJSON bool) error {
	text, err := s.Ticket(ctx, what, ttl)
	switch {
	case errors.Is(err, files.ErrNoAddresses):
		return worded(err, "no ticket was made: this install has not served yet and knows no relay, so there is no address to put in it; run kez serve (it records where it listens), then kez ticket %q", what)
	case errors.Is(err, files.ErrSharedWithGroup):
		return worded(err, "%q is shared with a group, which has no ticket: its members fetch it with kez fetch --group", what)
	case errors.Is(err, files.ErrNotShared):
		return worded(err, "you share no file named %q (nor with that CID): kez files lists yours", what)
	case err != nil:
		return err
	}
	t, err := files.ParseTicket(text, time.Now())
	if err != nil {
		return err
	}
	if asJSON {
		out := ticketJSON{Ticket: text, Name: t.Name, CID: t.CID.String(), Size: t.Size, Private: t.Private,
			Expires: t.Expires.UTC().Format(time.RFC3339), Device: t.Device.String(), Addrs: []string{}}
		for _, a := range t.Addrs {
			out.Addrs = append(out.Addrs, a.String())
		}
		return json.NewEncoder(e.stdout).Encode(out)
	}
	who := "anyone who has it"
	if t.Private {
		who = "only the people you shared it with"
	}
	fmt.Fprintf(e.stdout, "Ticket for %q, valid until %s (%s can fetch it while you run kez serve, without an account):\n", what,
		t.Expires.UTC().Format("2006-01-02 15:04 MST"), who)
	fmt.Fprintf(e.stdout, "  kez fetch %s\n", text)
	return nil
}

// isTicket reports whether arg is meant as a ticket (kez fetch TICKET).
func isTicket(arg string) bool {
	return strings.HasPrefix(strings.ToLower(strings.TrimSpace(arg)), files.TicketPrefix)
}

// runFetchTicket fetches the file a ticket names. It needs no kez init:
// without an identity in the state folder the fetch uses a key made for
// it, and nothing is written there.
func runFetchTicket(ctx context.Context, e *env, cf chatFlags, listen, text string, ff fetchFlags) error {
	t, err := files.ParseTicket(strings.TrimSpace(text), time.Now())
	if err != nil {
		return ticketSentence(err)
	}
	// files' own HTTP client: public addresses only, no redirect, no
	// proxy, unless KEZ_TICKET_LOCAL=1 lets the ticket reach this machine
	// or network (its sig-server and addresses).
	cfg := files.TicketFetchConfig{Logger: e.logger(cf.verbose), AllowLocal: e.getenv("KEZ_TICKET_LOCAL") == "1"}
	if l := e.envOr(listen, "KEZ_P2P_LISTEN"); l != "" {
		for _, a := range strings.Split(l, ",") {
			if a = strings.TrimSpace(a); a != "" {
				cfg.ListenAddrs = append(cfg.ListenAddrs, a)
			}
		}
	}
	if t.Private {
		if err := e.ticketKeys(ctx, cf.home, &cfg); err != nil {
			return err
		}
	}
	return reportFetch(e, ff, fetchRun{
		name: cmpName(t), who: "its owner", owner: t.Owner.String(),
		waiting: "The owner's device does not answer; waiting for it (Ctrl-C to stop)…",
		fetch: func(opts []files.FetchOption) (*files.Fetched, error) {
			return files.FetchTicket(ctx, t, ff.out, cfg, opts...)
		},
		refused: ticketSentence,
	})
}

// visiblePath returns p as it is, or quoted if it has characters that
// are not printable (control or bidi characters from a ticket's name).
func visiblePath(p string) string {
	if q := strconv.Quote(p); q[1:len(q)-1] != p {
		return q
	}
	return p
}

// cmpName is what the progress line calls the file of t.
func cmpName(t *files.Ticket) string {
	if t.Name != "" {
		return fmt.Sprintf("%q", t.Name)
	}
	return "the private file"
}

// ticketKeys fills cfg with this install's keys, if it has any, for a
// private ticket: the node's key and the keys that open the entry.
func (e *env) ticketKeys(ctx context.Context, homeFlag string, cfg *files.TicketFetchConfig) error {
	home, err := e.home(homeFlag)
	if err != nil {
		return err
	}
	hasID, err := kez.HasIdentity(home)
	if err != nil {
		return err
	}
	hasDev, err := kez.HasDevice(home)
	if err != nil {
		return err
	}
	if !hasID && !hasDev {
		return nil // a stranger: FetchTicket refuses, before dialling
	}
	acct, err := e.loadAccount(homeFlag)
	if err != nil {
		return err
	}
	cfg.Identity = acct.device()
	if acct.id != nil {
		cfg.Identity, cfg.Keys = acct.id, acct.id
		return nil
	}
	keys, err := chat.ReadKeyring(ctx, acct.home)
	if err != nil {
		return err
	}
	cfg.Keys = keys
	return nil
}

// ticketSentence words the refusals of a ticket fetch.
func ticketSentence(err error) error {
	var exp *files.TicketExpiredError
	var ue *files.UnreachableError
	switch {
	case errors.As(err, &exp):
		return worded(err, "this ticket expired on %s; ask its owner for a new one", exp.Expires.UTC().Format("2006-01-02 15:04 MST"))
	case errors.Is(err, files.ErrTicketSignature):
		return worded(err, "this ticket was changed after its owner signed it (or another key signed it), so it was not used")
	case errors.Is(err, files.ErrTicketMalformed):
		return worded(err, "this is not a ticket this kez can read (%s); check that it was copied whole", ticketReason(err))
	case errors.Is(err, files.ErrNotOwnersDevice):
		return worded(err, "this ticket names a device that is not one of its owner's, so nothing was fetched")
	case errors.Is(err, files.ErrDeviceRevoked):
		return worded(err, "the device this ticket names was revoked by its owner, so nothing was fetched; ask them for a new ticket")
	case errors.Is(err, files.ErrForbidden):
		return worded(err, "this ticket is for a file shared privately, and not with the keys of this install, so nothing was fetched")
	case errors.Is(err, files.ErrNotShared), errors.Is(err, files.ErrNotFound):
		return worded(err, "the owner no longer shares this file (or is not serving it now)")
	case errors.Is(err, files.ErrTicketStale):
		return worded(err, "the owner shared this file anew since the ticket was made; ask them for a new ticket")
	case errors.Is(err, files.ErrLocalAddress):
		return worded(err, "this ticket points at this machine or its local network, which kez does not contact for a ticket unless KEZ_TICKET_LOCAL=1 is set")
	case errors.As(err, &ue):
		return worded(err, "the owner's device did not answer at any of the ticket's %d addresses; it may be offline: try again later, or with --wait", ue.Addrs)
	}
	return err
}

// ticketReason is the reason ParseTicket gave, without its prefixes.
func ticketReason(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, files.ErrTicketMalformed.Error()+": "); i >= 0 {
		s = s[i+len(files.ErrTicketMalformed.Error())+2:]
	}
	return strings.TrimPrefix(s, "files: ")
}
