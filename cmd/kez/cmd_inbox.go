package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/kez-lat/kez-chat/chat"
)

func init() {
	register(&command{
		name:    "inbox",
		args:    "[--follow] [--json] [--all] [--requests] [--group NAME] [--nats URL] [--server URL] [--sig-server URL] [--home DIR] [--verbose]",
		summary: "print received messages, including those that came while you were offline",
		help: `
Fetches everything waiting for you on the NATS server (messages sent while
you were offline included), decrypts and verifies it on this machine,
stores it in your history (KEZ_HOME/chat.db) and prints the messages from
your contacts you have not seen yet, oldest first. Each message is shown
once; --all prints every message from your contacts again.

Messages from people who are not your contacts are message requests: they
are verified but kept apart; --requests prints them ("kez contacts add
HANDLE" moves them to your inbox, "kez block HANDLE|KEY" deletes them and
drops whatever that sender sends next). Messages from a contact whose key or
sigchain changed are held, with a warning, until you accept the change.
A device a contact's sigchain added or revoked is told once on stderr, as
news, not a warning ("@bob@kez.lat added a device, "phone" (signed by
their key)."): their primary key signed it.

--follow keeps running and prints messages as they arrive (Ctrl-C stops).
--json prints one object a line: {"id","from","text","sent_at"} plus
"from_key","kind","trust","received_at", and for a message to a group
"group" (NAME@domain) and, for one you sent, "read_by" (the keys of the
members who read it). A file shared with a group is a message of kind
"group-file" with "file": {"name","size","cid","private","media_type",
"mtime"} ("kez fetch --group GROUP NAME" fetches it).

--group NAME prints the conversation of a group you are in (or were):
every message, yours included (with who read them), oldest first; with
--follow, the group's new messages as they arrive.`,
		flags: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			var cf chatFlags
			var follow, asJSON, all, requests bool
			var grp string
			cf.declare(fs, true)
			fs.StringVar(&grp, "group", "", "print the conversation of this group")
			fs.BoolVar(&follow, "follow", false, "keep printing messages as they arrive")
			fs.BoolVar(&asJSON, "json", false, "print one JSON object a line")
			fs.BoolVar(&all, "all", false, "print every message from your contacts, not only new ones")
			fs.BoolVar(&requests, "requests", false, "print the messages from people who are not your contacts")
			return func(ctx context.Context, args []string) error {
				if len(args) > 0 {
					return usagef("inbox takes no arguments, got %q", args)
				}
				if grp != "" && (requests || all) {
					return usagef("--group prints the whole conversation of a group: it takes neither --requests nor --all")
				}
				if grp != "" {
					return runInboxGroup(ctx, e, cf, grp, follow, asJSON)
				}
				return runInbox(ctx, e, cf, follow, asJSON, all, requests)
			}
		},
	})
}

// inboxJSON is one line of "kez inbox --json" (docs/cli.md); fields may be
// added.
type inboxJSON struct {
	ID         string    `json:"id"`
	From       string    `json:"from"` // handle, or key when none is known
	Text       string    `json:"text"`
	SentAt     time.Time `json:"sent_at"`
	FromKey    string    `json:"from_key"`
	Kind       string    `json:"kind"`
	Trust      string    `json:"trust"`
	ReceivedAt time.Time `json:"received_at"`
	Group      string    `json:"group,omitempty"`   // a group message's group
	ReadBy     *[]string `json:"read_by,omitempty"` // a sent group message: who read it (keys)
	File       *fileJSON `json:"file,omitempty"`    // a group-file message: the file offered (never its key)
}

// printer writes messages for one command run; it is safe for concurrent
// use (kez chat prints from two goroutines).
type printer struct {
	mu     sync.Mutex
	w      io.Writer
	asJSON bool
	group  string // the group on screen (kez chat --group): its messages need not name it
}

func (p *printer) print(m *chat.Entry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	text := m.Text()
	var file *fileJSON
	switch m.Kind {
	case chat.KindText:
	case chat.KindGroupFile:
		f, err := m.GroupFile()
		if err != nil {
			text = "(a file offer this kez cannot read)"
			break
		}
		file = &fileJSON{Name: f.Name, Size: f.Size, CID: f.CID.String(), Private: true, MediaType: f.MediaType, ModTime: f.ModTime.UTC()}
		text = fmt.Sprintf("shared the file %q (%s): kez fetch --group %s %q", f.Name, humanSize(f.Size), m.Group, f.Name)
	default:
		text = fmt.Sprintf("(a %q message this kez does not show)", m.Kind)
	}
	if p.asJSON {
		j := inboxJSON{
			ID: m.ID.String(), From: m.Who(), Text: text, SentAt: m.SentAt.UTC(), FromKey: m.From.String(),
			Kind: string(m.Kind), Trust: string(m.Trust), ReceivedAt: m.ReceivedAt.UTC(), Group: m.Group, File: file,
		}
		if m.Group != "" && !m.Incoming {
			by := make([]string, 0, len(m.ReadBy))
			for _, k := range m.ReadBy {
				by = append(by, k.String())
			}
			j.ReadBy = &by
		}
		json.NewEncoder(p.w).Encode(j)
		return
	}
	who := "@" + m.PeerHandle
	if m.PeerHandle == "" {
		who = m.From.String()
	}
	if !m.Incoming {
		who = "you"
	}
	if m.Group != "" {
		if m.Group != p.group {
			who += " in " + m.Group
		}
		if !m.Incoming && len(m.ReadBy) > 0 {
			text += fmt.Sprintf(" (read by %d)", len(m.ReadBy))
		}
	}
	fmt.Fprintf(p.w, "[%s] %s: %s\n", m.SentAt.Local().Format("2006-01-02 15:04"), who, text)
}

func (p *printer) line(format string, a ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, format+"\n", a...)
}

// resolveRequestsWait bounds how long "kez inbox --requests" waits for
// the senders' handles to be looked up.
const resolveRequestsWait = 10 * time.Second

func runInbox(ctx context.Context, e *env, cf chatFlags, follow, asJSON, all, requests bool) error {
	c, err := e.openChat(ctx, cf, true)
	if err != nil {
		return err
	}
	defer shutdownChat(c)
	if _, err := c.Sync(ctx); err != nil {
		return err
	}
	if svs, err := c.SplitViews(ctx); err == nil {
		printSplitViews(e.stderr, svs)
	}
	out := &printer{w: e.stdout, asJSON: asJSON}
	note := &printer{w: e.stderr}
	var shown []*chat.Entry
	if requests {
		// Show the handles the senders' servers confirm; a slow or
		// refused server only leaves its sender's key shown.
		rctx, cancel := context.WithTimeout(ctx, resolveRequestsWait)
		if err := c.ResolveRequests(rctx); err != nil && rctx.Err() == nil {
			cancel()
			return err
		}
		cancel()
		if shown, err = c.Requests(ctx); err != nil {
			return err
		}
	} else if shown, err = c.Inbox(ctx, all); err != nil {
		return err
	}
	for _, m := range shown {
		out.print(m)
	}
	if requests && len(shown) > 0 && !asJSON {
		note.line("Accept a request with kez contacts add HANDLE; kez block HANDLE (or KEY) deletes a sender's requests and drops what they send next.")
	}
	if len(shown) == 0 && !asJSON && !follow {
		if requests {
			out.line("No message requests.")
		} else {
			out.line("No new messages.")
		}
	}
	if err := noteSetAside(ctx, c, note, !requests); err != nil {
		if follow && ctx.Err() != nil {
			return nil // Ctrl-C while it started: stopping is what was asked
		}
		return err
	}
	if !follow {
		return nil
	}
	saySessionChanges(ctx, c.Conn(), note, e.natsURL)
	err = c.Run(ctx, func(m *chat.Entry) {
		switch {
		case m.Trust == chat.TrustTrusted && !requests:
			out.print(m)
			if err := c.MarkRead(ctx, m); err != nil {
				note.line("kez inbox: %s", e.sentence(err))
			}
		case m.Trust == chat.TrustRequest && requests:
			out.print(m)
		case m.Trust == chat.TrustRequest:
			note.line("A message request from %s: kez inbox --requests", m.Who())
		case m.Trust == chat.TrustHeld:
			note.line("A message from %s is HELD: their key or sigchain changed (kez contacts list)", m.Who())
		}
	})
	if err != nil {
		return err
	}
	return nil
}

// noteSetAside tells, on stderr, about requests, group invitations and
// held messages.
func noteSetAside(ctx context.Context, c *chat.Client, note *printer, requests bool) error {
	gs, err := c.Groups(ctx)
	if err != nil {
		return err
	}
	for _, g := range gs {
		if g.Invited {
			note.line("An invitation to the group %s from %s, who is not your contact: kez group accept %s joins it (kez group leave %s declines it); until then its messages are message requests", g.Name, g.InvitedBy, g.Name, g.Name)
		}
	}
	if requests {
		reqs, err := c.Requests(ctx)
		if err != nil {
			return err
		}
		if len(reqs) > 0 {
			note.line("%d message request(s) from people who are not your contacts: kez inbox --requests", len(reqs))
		}
	}
	held, err := c.Held(ctx)
	if err != nil {
		return err
	}
	if len(held) > 0 {
		from := map[string]bool{}
		for _, m := range held {
			from[m.Who()] = true
		}
		for who := range from {
			note.line("WARNING: messages from %s are held because their key or sigchain changed; see kez contacts list", who)
		}
	}
	return nil
}

// runInboxGroup prints the conversation of a group and, with follow, its
// new messages as they arrive.
func runInboxGroup(ctx context.Context, e *env, cf chatFlags, name string, follow, asJSON bool) error {
	c, g, err := e.openGroup(ctx, cf, name)
	if err != nil {
		return err
	}
	defer shutdownChat(c)
	out := &printer{w: e.stdout, asJSON: asJSON, group: g.Name}
	note := &printer{w: e.stderr}
	hist, err := c.GroupHistory(ctx, g.Name, 0)
	if err != nil {
		return err
	}
	if err := showRead(ctx, c, out, hist); err != nil {
		return err
	}
	if len(hist) == 0 && !asJSON && !follow {
		out.line("No messages in %s yet.", g.Name)
	}
	if !follow {
		return nil
	}
	saySessionChanges(ctx, c.Conn(), note, e.natsURL)
	return c.Run(ctx, func(m *chat.Entry) {
		if m.Group == g.Name && m.Trust == chat.TrustTrusted {
			e.showArrived(ctx, c, out, note, "inbox", m)
		}
	})
}

// shutdownTimeout bounds how long a command that showed messages waits,
// as it ends, for what they caused to be sent (group read receipts).
const shutdownTimeout = 10 * time.Second

// shutdownChat closes c once the work it started in the background is
// done (a group read receipt is sent so, after the messages were shown),
// or after shutdownTimeout.
func shutdownChat(c *chat.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	c.Shutdown(ctx)
	c.Close()
}
