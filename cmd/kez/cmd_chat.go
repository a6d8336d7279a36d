package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"strings"

	"github.com/kez-lat/kez-chat/chat"
)

// chatHistoryLines is how much of the conversation "kez chat" shows first.
const chatHistoryLines = 20

func init() {
	register(&command{
		name:    "chat",
		args:    "(HANDLE | --group NAME) [--nats URL] [--server URL] [--sig-server URL] [--home DIR] [--verbose]",
		summary: "talk with a contact or a group: messages appear as they arrive",
		help: `
Opens a conversation with HANDLE, one of your contacts: it shows the last
messages between you, then prints their messages as they arrive while you
type. Each line you enter is sent as one message. /quit (or end of input,
Ctrl-D) leaves.

Messages from other people arrive too; kez chat only says that they came
(read them with "kez inbox"). A device the contact's sigchain added or
revoked is told as news, not a warning: their primary key signed it.

--group NAME talks in a group you are in instead (NAME@domain, or NAME for
a group of your domain): the last messages of the group, then each
member's messages as they arrive ("[time] @bob@kez.lat: text"); each line
you enter goes to every member.`,
		flags: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			var cf chatFlags
			var grp string
			cf.declare(fs, true)
			fs.StringVar(&grp, "group", "", "talk in this group instead of with a contact")
			return func(ctx context.Context, args []string) error {
				if grp != "" {
					if len(args) != 0 {
						return usagef("chat takes one HANDLE or --group NAME, not both")
					}
					return runChatGroup(ctx, e, cf, grp)
				}
				if len(args) != 1 {
					return usagef("chat takes one HANDLE (or --group NAME)")
				}
				return runChat(ctx, e, cf, args[0])
			}
		},
	})
}

func runChat(ctx context.Context, e *env, cf chatFlags, handle string) error {
	c, err := e.openChat(ctx, cf, true)
	if err != nil {
		return err
	}
	defer shutdownChat(c)
	ct, err := c.CheckContact(ctx, handle)
	if err != nil {
		return e.unknownOrNotContact(ctx, handle, err)
	}
	if _, err := c.Sync(ctx); err != nil {
		return err
	}
	out := &printer{w: e.stdout}
	note := &printer{w: e.stderr}
	saySessionChanges(ctx, c.Conn(), note, e.natsURL)
	hist, err := c.History(ctx, ct.Handle, chatHistoryLines)
	if err != nil {
		return err
	}
	if err := showRead(ctx, c, out, hist); err != nil {
		return err
	}
	out.line("-- talking with @%s (%s); /quit leaves --", ct.Handle, verifiedWord(ct))
	return chatLoop(ctx, e, c, note, func(ctx context.Context, m *chat.Entry) {
		switch {
		case m.Peer == ct.Key && m.Group == "" && m.Trust == chat.TrustTrusted:
			e.showArrived(ctx, c, out, note, "chat", m)
		default:
			noteOther(note, m)
		}
	}, func(line string) error {
		if _, err := c.Send(ctx, ct.Handle, line); err != nil {
			// A flagged contact stops the conversation; other
			// failures are reported and the user may retry.
			if flagged(err) {
				return err
			}
			note.line("kez chat: not sent: %s", e.sentence(err))
		}
		return nil
	})
}

// showRead prints messages and marks those not read yet as read.
func showRead(ctx context.Context, c *chat.Client, out *printer, ms []*chat.Entry) error {
	var unread []*chat.Entry
	for _, m := range ms {
		out.print(m)
		if !m.Read {
			unread = append(unread, m)
		}
	}
	return c.MarkRead(ctx, unread...)
}

// showArrived prints a message that arrived and marks it read (the
// command's name words a failure).
func (e *env) showArrived(ctx context.Context, c *chat.Client, out, note *printer, cmd string, m *chat.Entry) {
	out.print(m)
	if err := c.MarkRead(ctx, m); err != nil {
		note.line("kez %s: %s", cmd, e.sentence(err))
	}
}

// noteOther tells on stderr about a message that is not of the
// conversation on screen.
func noteOther(note *printer, m *chat.Entry) {
	switch {
	case m.Trust == chat.TrustHeld:
		note.line("A message from %s is HELD: their key or sigchain changed (kez contacts list)", m.Who())
	case m.Trust == chat.TrustRequest:
		note.line("A message request from %s (kez inbox --requests)", m.Who())
	case m.Group != "":
		note.line("A message from @%s in %s (kez inbox)", m.PeerHandle, m.Group)
	default:
		note.line("A message from @%s (kez inbox)", m.PeerHandle)
	}
}

// chatLoop runs an interactive conversation: receive sees each message
// that arrives, send each line typed (a non-nil error ends the
// conversation with it), until /quit, the end of input or ctx.
func chatLoop(ctx context.Context, e *env, c *chat.Client, note *printer, receive func(context.Context, *chat.Entry), send func(string) error) error {
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- c.Run(runCtx, func(m *chat.Entry) { receive(runCtx, m) })
	}()

	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(e.stdin)
		sc.Buffer(make([]byte, 64<<10), chat.MaxBodySize)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-runCtx.Done():
				return
			}
		}
		if err := sc.Err(); err != nil {
			note.line("kez chat: reading your input: %v", err)
		}
	}()
	var sendErr error
loop:
	for {
		select {
		case line, ok := <-lines:
			if !ok || strings.TrimSpace(line) == "/quit" {
				break loop
			}
			if strings.TrimSpace(line) == "" {
				continue
			}
			if sendErr = send(line); sendErr != nil {
				break loop
			}
		case <-ctx.Done():
			break loop
		}
	}
	stop()
	if err := <-done; err != nil && sendErr == nil {
		return err
	}
	return sendErr
}

// openGroup opens the chat client online, takes what waits, and returns
// the group name (refreshed from its sig-server).
func (e *env) openGroup(ctx context.Context, cf chatFlags, name string) (*chat.Client, *chat.Group, error) {
	c, err := e.openChat(ctx, cf, true)
	if err != nil {
		return nil, nil, err
	}
	if _, err := c.Sync(ctx); err != nil {
		shutdownChat(c)
		return nil, nil, err
	}
	g, err := c.Group(ctx, name)
	if err != nil {
		shutdownChat(c)
		return nil, nil, aboutGroup(name, err)
	}
	return c, g, nil
}

func runChatGroup(ctx context.Context, e *env, cf chatFlags, name string) error {
	c, g, err := e.openGroup(ctx, cf, name)
	if err != nil {
		return err
	}
	defer shutdownChat(c)
	if err := groupUnusable(g); err != nil {
		return aboutGroup(name, err)
	}
	out := &printer{w: e.stdout, group: g.Name}
	note := &printer{w: e.stderr}
	saySessionChanges(ctx, c.Conn(), note, e.natsURL)
	hist, err := c.GroupHistory(ctx, g.Name, chatHistoryLines)
	if err != nil {
		return err
	}
	if err := showRead(ctx, c, out, hist); err != nil {
		return err
	}
	out.line("-- talking in %s%s (%s); /quit leaves --", g.Name, titled(g.Title), memberCount(len(g.Members)))
	return chatLoop(ctx, e, c, note, func(ctx context.Context, m *chat.Entry) {
		switch {
		case m.Group == g.Name && m.Trust == chat.TrustTrusted:
			e.showArrived(ctx, c, out, note, "chat", m)
		default:
			noteOther(note, m)
		}
	}, func(line string) error {
		if _, err := c.SendGroup(ctx, g.Name, line); err != nil {
			// Removed from the group, or the group broken: the
			// conversation ends; other failures may be retried.
			if errors.Is(err, chat.ErrNotGroupMember) || errors.Is(err, chat.ErrGroupBroken) {
				return aboutGroup(g.Name, err)
			}
			note.line("kez chat: not sent: %s", e.sentence(aboutGroup(g.Name, err)))
		}
		return nil
	})
}

func flagged(err error) bool {
	var kc *chat.KeyChangedError
	var cr *chat.ChainRewrittenError
	return errors.As(err, &kc) || errors.As(err, &cr)
}

func verifiedWord(ct *chat.Contact) string {
	if ct.Verified() {
		return "verified"
	}
	return "not verified: \"kez contacts verify " + ct.Handle + "\" shows the safety number to compare"
}
