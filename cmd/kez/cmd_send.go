package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/handles"
)

func init() {
	register(&command{
		name:    "send",
		args:    "HANDLE [TEXT] [--wait] [--json] [--nats URL] [--server URL] [--home DIR]",
		summary: "send an end-to-end encrypted message to a contact",
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

NATS_URL (or --nats) is your operator's NATS server; KEZ_SERVER and
KEZ_SIG_SERVER (or your profile) name the chat-server and sig-server.`,
		flags: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			var cf chatFlags
			var wait, asJSON bool
			var timeout time.Duration
			cf.declare(fs, true)
			fs.BoolVar(&wait, "wait", false, "wait for the delivery receipt")
			fs.DurationVar(&timeout, "timeout", 30*time.Second, "how long --wait waits")
			fs.BoolVar(&asJSON, "json", false, "print JSON")
			return func(ctx context.Context, args []string) error {
				args, err := interleaved(fs, args)
				if err != nil {
					return err
				}
				if len(args) == 0 {
					return usagef("send needs a HANDLE")
				}
				return runSend(ctx, e, cf, args[0], args[1:], wait, timeout, asJSON)
			}
		},
	})
}

// interleaved parses flags that come after positional arguments too ("kez
// contacts list --json"), returning the positional ones in order. After
// "--" everything is positional.
func interleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return nil, usagef("%v", err)
		}
		rest := fs.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			break
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
	return pos, nil
}

// chatFlags are the flags of the commands that open the chat client.
type chatFlags struct {
	home string
	sf   serverFlags
	nats string
}

func (f *chatFlags) declare(fs *flag.FlagSet, online bool) {
	fs.StringVar(&f.home, "home", "", homeFlagHelp)
	f.sf.declare(fs)
	if online {
		fs.StringVar(&f.nats, "nats", "", "NATS server URL (env NATS_URL)")
	}
}

// openChat opens the user's chat client: identity, profile and servers as
// the other commands settle them, the database in the state folder, and,
// when online, a NATS login.
func (e *env) openChat(ctx context.Context, f chatFlags, online bool) (*chat.Client, error) {
	acct, err := e.loadAccount(f.home)
	if err != nil {
		return nil, err
	}
	home, id, prof := acct.home, acct.id, acct.prof
	srv, err := e.settleServers(ctx, f.sf, prof, false)
	if err != nil {
		return nil, err
	}
	cfg := chat.Config{
		Identity:          id,
		Home:              home,
		ServerURL:         srv.server,
		SigServerURL:      srv.sigServer,
		Domain:            srv.domain,
		AllowLocalDomains: e.allowLocal(srv.domain),
		LocalDomains:      e.localDomains(),
		HTTPClient:        httpClient,
		// Warnings (a rejected message, a flagged contact) are for the user.
		Logger: slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	if online {
		cfg.NATSURL = e.envOr(f.nats, "NATS_URL")
		if cfg.NATSURL == "" {
			return nil, errors.New("no NATS server given: set NATS_URL (or pass --nats) to your operator's NATS, e.g. nats://127.0.0.1:4222")
		}
	}
	c, err := chat.Open(ctx, cfg)
	if err != nil {
		return nil, chatError(err)
	}
	return c, nil
}

// chatError turns a chat SDK error into a sentence for the CLI; errors.Is
// still sees the original.
func chatError(err error) error {
	var kc *chat.KeyChangedError
	var cr *chat.ChainRewrittenError
	var nc *chat.NotContactError
	var qe *chat.QuotaError
	msg := err.Error()
	switch {
	case errors.Is(err, chat.ErrUnknownRecipient):
		msg = "the chat-server refused the message: that key holds no handle there, so nothing was sent"
	case errors.As(err, &qe):
		msg = quotaSentence(qe.Limit)
	case errors.As(err, &nc):
		msg = fmt.Sprintf("%s is not a contact yet: run kez contacts add %s", nc.Handle, nc.Handle)
	case errors.As(err, &kc):
		msg = strings.TrimPrefix(kc.Error(), "chat: ") + fmt.Sprintf(" (kez contacts add %s)", kc.Handle)
	case errors.As(err, &cr):
		msg = strings.TrimPrefix(cr.Error(), "chat: ") + fmt.Sprintf(" (kez contacts add %s)", cr.Handle)
	case handles.ReasonOf(err) == handles.ReasonNoDomain:
		msg = "a bare name needs your home domain: write name@domain, or set KEZ_SERVER to your chat-server"
	case errors.Is(err, handles.ErrForbiddenOrigin):
		msg = forbiddenSentence(err)
	default:
		for _, p := range []string{"chat: ", "handles: ", "sigchain: ", "kez: ", "natsconn: "} {
			msg = strings.TrimPrefix(msg, p)
		}
		msg = withAdvice(msg, chatAdvice(err))
	}
	return &cliErr{msg: msg, err: err}
}

// quotaSentence says which sending limit refused a message, and what to
// do about it.
func quotaSentence(limit string) string {
	switch limit {
	case "sender":
		return "you are sending faster than the chat-server allows; nothing was sent: wait a little and send again"
	case "recipient":
		return "the recipient is taking in more mail than the chat-server allows right now; nothing was sent: try again later"
	case "unread":
		return "the recipient has not read the many messages you already sent; nothing was sent until they read some"
	default:
		return "the chat-server's message store is full; nothing was sent: try again later, or tell its operator"
	}
}

// forbiddenSentence words a refusal of the remote-origin rules.
func forbiddenSentence(err error) string {
	return fmt.Sprintf("kez will not contact the server this handle's domain names, because it is not public https (%v); "+
		"if it is a development or private domain you trust, add it to KEZ_LOCAL_DOMAINS", trimSDK(err))
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
	text, err := readText(e, args)
	if err != nil {
		return err
	}
	if strings.TrimSpace(text) == "" {
		return usagef("nothing to send: give TEXT or pipe it in")
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
		return chatError(err)
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
