package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/sigchain"
)

func init() {
	register(&command{
		name:    "send",
		args:    "(HANDLE | --group NAME) [TEXT] [--wait [--timeout D]] [--json] [--nats URL] [--server URL] [--sig-server URL] [--home DIR] [--verbose]",
		summary: "send an end-to-end encrypted message to a contact or a group",
		help: `
Sends TEXT (or, without TEXT, everything on standard input, at most 48 KiB)
to HANDLE, which must be one of your contacts ("kez contacts add HANDLE"
pins their key first). The message is encrypted to their key on this
machine and signed with yours; the NATS server only relays ciphertext and
keeps it until they come online.

Before sending, the contact is checked against their servers: if their
handle now belongs to another key, or their sigchain was rewritten, nothing
is sent and you get a warning with both fingerprints.

--wait waits (up to --timeout) for the recipient's signed delivery receipt.
If none comes in time the message is still sent, and kez exits with status
3 (not 1), so a script can tell it from a failure and does not send it
again.
--json prints {"id","to","to_key","sent_at","seq","delivered_at"}, also
when it exits 3 (with "delivered_at": null).

--group NAME sends TEXT to a group you are in instead (NAME@domain, or NAME
for a group of your domain): encrypted once, with this device's key for
the group, and delivered to every current member's devices. --json then
prints {"id","group","sent_at"}; --wait is for one-to-one messages only
(read receipts of group messages show in "kez inbox --group NAME").

NATS_URL (or --nats) is your operator's NATS server; KEZ_SERVER and
KEZ_SIG_SERVER (or your profile) name the chat-server and sig-server.`,
		flags: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			var cf chatFlags
			var wait, asJSON bool
			var timeout time.Duration
			var grp string
			cf.declare(fs, true)
			fs.StringVar(&grp, "group", "", "send to this group instead of a contact")
			fs.BoolVar(&wait, "wait", false, "wait for the delivery receipt")
			fs.DurationVar(&timeout, "timeout", 30*time.Second, "how long --wait waits")
			fs.BoolVar(&asJSON, "json", false, "print JSON")
			return func(ctx context.Context, args []string) error {
				if grp != "" {
					if wait {
						return usagef("--wait is for messages to one contact, not to a group")
					}
					return runSendGroup(ctx, e, cf, grp, args, asJSON)
				}
				if len(args) == 0 {
					return usagef("send needs a HANDLE (or --group NAME)")
				}
				return runSend(ctx, e, cf, args[0], args[1:], wait, timeout, asJSON)
			}
		},
	})
}

// chatFlags are the flags of the commands that open the chat client.
type chatFlags struct {
	home    string
	sf      serverFlags
	nats    string
	verbose bool
}

func (f *chatFlags) declare(fs *flag.FlagSet, online bool) {
	fs.StringVar(&f.home, "home", "", homeFlagHelp)
	f.sf.declare(fs)
	if online {
		fs.StringVar(&f.nats, "nats", "", "NATS server URL (env NATS_URL)")
	}
	fs.BoolVar(&f.verbose, "verbose", false, "also print the log lines of the SDK (connections, checks, dropped messages)")
}

// natsURL returns the NATS URL of a command that logs in: --nats, else
// NATS_URL. It remembers it for wording errors.
func (e *env) natsURLFor(f chatFlags) (string, error) {
	u := e.envOr(f.nats, "NATS_URL")
	if u == "" {
		return "", errors.New("no NATS server given: set NATS_URL (or pass --nats) to your operator's NATS, e.g. nats://127.0.0.1:4222")
	}
	e.natsURL = u
	return u, nil
}

// openChat opens the user's chat client: identity, profile and servers as
// the other commands settle them, the database in the state folder, and,
// when online, a NATS login.
func (e *env) openChat(ctx context.Context, f chatFlags, online bool) (*chat.Client, error) {
	return e.openChatAt(ctx, f, online, true)
}

// openLocalChat opens the user's chat client for what only reads the
// state folder (the contacts): no server is asked anything, so none that
// is down is complained about.
func (e *env) openLocalChat(ctx context.Context, f chatFlags) (*chat.Client, error) {
	return e.openChatAt(ctx, f, false, false)
}

func (e *env) openChatAt(ctx context.Context, f chatFlags, online, withServers bool) (*chat.Client, error) {
	acct, err := e.loadAccount(f.home)
	if err != nil {
		return nil, err
	}
	return e.openChatAs(ctx, f, acct, online, withServers)
}

// openChatAs is openChatAt for an account already loaded; opts change
// the client's configuration last (the UI's notifications).
func (e *env) openChatAs(ctx context.Context, f chatFlags, acct *account, online, withServers bool, opts ...func(*chat.Config)) (*chat.Client, error) {
	var err error
	var srv servers
	if withServers {
		if srv, err = e.settleServers(ctx, f.sf, acct.prof, false); err != nil {
			return nil, err
		}
	}
	cfg := chat.Config{Client: e.clientConfig(acct, srv, f.verbose)}
	// A contact's device added or revoked: news, not a warning (the
	// contact's primary key signed it), told when a check finds it.
	cfg.OnContactDevice = func(d chat.ContactDevice) { fmt.Fprintln(e.stderr, d.String()) }
	if online && acct.prof.NeedsDevice && acct.dev == nil {
		return nil, errNeedsDevice
	}
	if online {
		if cfg.Client.NATSURL, err = e.natsURLFor(f); err != nil {
			return nil, err
		}
		cfg.OnSessionReset = func(r chat.SessionReset) { fmt.Fprintln(e.stderr, sessionResetLine(r)) }
	}
	for _, o := range opts {
		o(&cfg)
	}
	c, err := chat.Open(ctx, cfg)
	if errors.Is(err, chat.ErrNotRegistered) {
		if werr := e.revokedDevice(ctx, acct, cmp.Or(srv.sigServer, acct.prof.SigServer), err); werr != nil {
			return nil, werr
		}
	}
	return c, err
}

// revokedDevice words a login refusal of this install's device key when
// the sig-server says the person revoked it (the generic sentence would
// ask to register a handle); nil when it does not say so or cannot be
// asked.
func (e *env) revokedDevice(ctx context.Context, acct *account, sigServer string, err error) error {
	if sigServer == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	person, revoked, lerr := (&sigchain.Client{BaseURL: sigServer, HTTPClient: httpClient}).DevicePerson(ctx, acct.device().PublicKey())
	if lerr != nil || !revoked || person != acct.person {
		return nil
	}
	again := "to use this machine again, run \"kez link\" with another --home and approve it from the install that holds your primary key"
	if acct.id != nil {
		again = "this install holds your words, so \"kez recover --force\" here makes it a new device"
	}
	return worded(err, "this device was revoked by %s, so it can no longer log in and nothing sent from now on reaches it; %s", acct.who(), again)
}

// errNeedsDevice refuses to log in with the primary key on an install
// "kez recover" restored without a device key of its own.
var errNeedsDevice = errors.New("this install was restored from your words but is not a device of yours yet, so it does not log in (it would take your other device's messages): run \"kez recover --force\" again once your servers answer")

// sessionResetLine is the notice of messages that could not be decrypted
// because this device lost its sessions (docs/cli.md).
func sessionResetLine(r chat.SessionReset) string {
	if r.Reset {
		return r.String() + "; a new session was started and they will be sent again"
	}
	return r.String() + `; add the sender as a contact ("kez contacts add") to have them sent again`
}

// clientConfig is the SDK's configuration of the user's client, for chat
// and files alike: the account and the servers as the commands settle
// them, the CLI's HTTP client and its logger.
func (e *env) clientConfig(acct *account, srv servers, verbose bool) client.Config {
	return client.Config{
		Identity:          acct.id,
		Device:            acct.dev,
		Person:            acct.person,
		Home:              acct.home,
		ServerURL:         srv.server,
		SigServerURL:      srv.sigServer,
		Domain:            srv.domain,
		AllowLocalDomains: e.allowLocal(srv.domain),
		LocalDomains:      e.localDomains(),
		HTTPClient:        httpClient,
		Logger:            e.logger(verbose),
	}
}

// unknownOrNotContact words the refusal to talk with a handle that is not
// a contact: a handle no one holds is named as such (adding it would fail
// too), one that exists gets the "kez contacts add" to run. Other errors
// are returned as they are, about handle.
func (e *env) unknownOrNotContact(ctx context.Context, handle string, err error) error {
	if errors.Is(err, chat.ErrNotContact) {
		if _, rerr := e.resolver(e.srv).Resolve(ctx, handle); errors.Is(rerr, handles.ErrNotFound) {
			return worded(rerr, "no one is registered as %s, so nothing was sent", fullHandle(handle, e.srv.domain))
		}
	}
	return aboutHandle(handle, err)
}

// readText returns the message text: the arguments joined by spaces, or
// standard input (one trailing line break dropped).
func readText(e *env, args []string) (string, error) {
	if len(args) > 0 {
		return strings.Join(args, " "), nil
	}
	b, err := io.ReadAll(io.LimitReader(e.stdin, chat.MaxBodySize+2))
	if err != nil {
		return "", fmt.Errorf("reading the message from standard input: %w", err)
	}
	s := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if len(s) > chat.MaxBodySize {
		return "", fmt.Errorf("the message is longer than %d KiB; send a file instead (kez share)", chat.MaxBodySize>>10)
	}
	return s, nil
}

// readMessage is readText for a message: a blank one is a usage error.
func readMessage(e *env, args []string) (string, error) {
	text, err := readText(e, args)
	if err == nil && strings.TrimSpace(text) == "" {
		err = usagef("nothing to send: give TEXT or pipe it in")
	}
	return text, err
}

// sendJSON is the --json output of "kez send"; fields may be added.
type sendJSON struct {
	ID          string     `json:"id"`
	To          string     `json:"to"`
	ToKey       string     `json:"to_key"`
	SentAt      time.Time  `json:"sent_at"`
	Seq         uint64     `json:"seq"`
	DeliveredAt *time.Time `json:"delivered_at"`
}

func runSend(ctx context.Context, e *env, cf chatFlags, handle string, args []string, wait bool, timeout time.Duration, asJSON bool) error {
	text, err := readMessage(e, args)
	if err != nil {
		return err
	}
	c, err := e.openChat(ctx, cf, true)
	if err != nil {
		return err
	}
	defer c.Close()
	var opts []chat.SendOption
	if wait {
		opts = append(opts, chat.WaitReceipt())
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	s, err := c.Send(ctx, handle, text, opts...)
	var noReceipt error
	if err != nil && s.Seq != 0 && wait && errors.Is(err, context.DeadlineExceeded) {
		noReceipt = &exitError{code: exitNoReceipt, err: fmt.Errorf("sent (message %s), but no delivery receipt came within %s: %s has not been online since; do not send it again", s.ID, timeout, handle)}
		if !asJSON {
			return noReceipt
		}
	} else if err != nil {
		return e.unknownOrNotContact(ctx, handle, err)
	}
	if asJSON {
		out := sendJSON{ID: s.ID.String(), To: s.Handle, ToKey: s.To.String(), SentAt: s.SentAt.UTC(), Seq: s.Seq}
		if !s.DeliveredAt.IsZero() {
			at := s.DeliveredAt.UTC()
			out.DeliveredAt = &at
		}
		if err := json.NewEncoder(e.stdout).Encode(out); err != nil {
			return err
		}
		return noReceipt
	}
	fmt.Fprintf(e.stdout, "Sent to @%s (message %s).\n", s.Handle, s.ID)
	if !s.DeliveredAt.IsZero() {
		fmt.Fprintf(e.stdout, "Delivered at %s.\n", s.DeliveredAt.Local().Format("2006-01-02 15:04:05"))
	}
	return nil
}

// sendGroupJSON is the --json output of "kez send --group"; fields may be
// added.
type sendGroupJSON struct {
	ID     string    `json:"id"`
	Group  string    `json:"group"`
	SentAt time.Time `json:"sent_at"`
}

func runSendGroup(ctx context.Context, e *env, cf chatFlags, name string, args []string, asJSON bool) error {
	text, err := readMessage(e, args)
	if err != nil {
		return err
	}
	c, err := e.openChat(ctx, cf, true)
	if err != nil {
		return err
	}
	defer c.Close()
	s, err := c.SendGroup(ctx, name, text)
	if err != nil {
		return aboutGroup(name, err)
	}
	g := fullGroup(name, e.srv.domain)
	if asJSON {
		return json.NewEncoder(e.stdout).Encode(sendGroupJSON{ID: s.ID.String(), Group: g, SentAt: s.SentAt.UTC()})
	}
	fmt.Fprintf(e.stdout, "Sent to the group %s (message %s).\n", g, s.ID)
	return nil
}
