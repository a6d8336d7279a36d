package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/internal/testenv/devstack"
	"github.com/kez-lat/kez-chat/kez"
)

// quick is the state the steps share.
type quick struct {
	out   io.Writer
	opts  options
	dir   string // the temporary folder: stack state and users' homes
	stack *devstack.Stack
	quiet *slog.Logger // the clients' logs go to a file in dir

	alice, bob, carol *user
}

// user is one person of the story.
type user struct {
	name   string
	id     *kez.Identity
	handle handles.Handle
	home   string        // KEZ_HOME: chat.db and the share index
	client client.Config // discovered once, for chat and files
	chat   *chat.Client  // nil while offline
	files  *files.Sharing
}

func (q *quick) say(format string, a ...any) { fmt.Fprintf(q.out, format, a...) }

func (q *quick) startStack(ctx context.Context) error {
	dir, err := os.MkdirTemp(q.opts.tempRoot, "kez-quickstart-")
	if err != nil {
		return err
	}
	q.dir = dir
	logf, err := os.Create(filepath.Join(dir, "clients.log"))
	if err != nil {
		return err
	}
	q.quiet = slog.New(slog.NewTextHandler(logf, nil))
	q.stack, err = devstack.Start(ctx, devstack.Config{
		Dir:        filepath.Join(dir, "stack"),
		NATSServer: q.opts.natsServer,
	})
	if err != nil {
		return err
	}
	q.say("      NATS         %s (auth callout: only registered keys may log in)\n", q.stack.NATSURL)
	q.say("      chat-server  %s (handles @NAME@%s)\n", q.stack.ServerURL, q.stack.Domain)
	q.say("      sig-server   %s\n", q.stack.SigServerURL)
	return nil
}

func (q *quick) makeIdentities(ctx context.Context) error {
	var words kez.Mnemonic
	var err error
	for _, u := range []**user{&q.alice, &q.bob, &q.carol} {
		*u = &user{}
		(*u).id, words, err = kez.NewIdentity()
		if err != nil {
			return err
		}
		if u == &q.alice {
			q.say("      alice's paper backup, shown once (the same words restore her key anywhere):\n")
			w := words.Words()
			for i := 0; i < len(w); i += 8 {
				q.say("        %s\n", strings.Join(w[i:i+8], " "))
			}
		}
	}
	q.alice.name, q.bob.name, q.carol.name = "alice", "bob", "carol"
	for _, u := range q.users() {
		u.home = filepath.Join(q.dir, u.name)
		q.say("      %-5s key %s…  (also the NATS login and the libp2p peer ID)\n", u.name, u.id.PublicKey().String()[:16])
	}
	return nil
}

// register does what "kez register NAME" does, with handles.Register: the
// eldest sigchain link (key, encryption key, handle) at the sig-server,
// then the handle claim, signed by the key, at the chat-server.
func (q *quick) register(ctx context.Context) error {
	servers := handles.RegisterOptions{ServerURL: q.stack.ServerURL, SigServerURL: q.stack.SigServerURL}
	for _, u := range q.users() {
		u.handle = handles.Handle{Name: u.name, Domain: q.stack.Domain}
		if _, err := handles.Register(ctx, u.id, u.handle, servers); err != nil {
			return fmt.Errorf("registering %s: %w", u.handle.Display(), err)
		}
		q.say("      %s registered\n", u.handle.Display())
	}
	for _, u := range q.users() {
		if err := q.online(ctx, u); err != nil {
			return err
		}
	}
	return nil
}

// online opens u's chat client: it logs in to NATS with u's key.
func (q *quick) online(ctx context.Context, u *user) error {
	// One client configuration for chat and files, discovered once; the
	// chat-server names the handle domain and the sig-server.
	if u.client.Home != "" {
		return q.openChat(ctx, u)
	}
	cc, err := client.Config{
		Identity:  u.id,
		Home:      u.home,
		NATSURL:   q.stack.NATSURL,
		ServerURL: q.stack.ServerURL,
		Logger:    q.quiet,
	}.Discover(ctx)
	if err != nil {
		return fmt.Errorf("%s's client: %w", u.name, err)
	}
	u.client = cc
	return q.openChat(ctx, u)
}

// openChat opens u's chat client with u's discovered configuration.
func (q *quick) openChat(ctx context.Context, u *user) error {
	c, err := chat.Open(ctx, chat.Config{Client: u.client})
	if err != nil {
		return fmt.Errorf("%s's client: %w", u.name, err)
	}
	u.chat = c
	return nil
}

func (q *quick) offlineUser(u *user) error {
	c := u.chat
	u.chat = nil
	return c.Close()
}

func (q *quick) addContacts(ctx context.Context) error {
	for _, p := range [][2]*user{{q.alice, q.bob}, {q.bob, q.alice}} {
		me, them := p[0], p[1]
		ct, err := me.chat.AddContact(ctx, them.name)
		if err != nil {
			return fmt.Errorf("%s adds %s: %w", me.name, them.name, err)
		}
		if ct.Key != them.id.PublicKey() {
			return fmt.Errorf("%s resolved %s to the wrong key %s", me.name, them.name, ct.Key)
		}
		q.say("      %s pinned @%s: fingerprint %s\n", me.name, ct.Handle, ct.Fingerprint())
	}
	// They compare the safety number of their two keys in person: alice
	// reads hers (computed with her key first), bob types it.
	readByAlice := kez.SafetyNumber(q.alice.id.PublicKey(), q.bob.id.PublicKey())
	if _, err := q.bob.chat.VerifyContact(ctx, "alice", readByAlice); err != nil {
		return err
	}
	q.say("      bob compared their safety number with alice in person: verified\n")
	return nil
}

func (q *quick) chat(ctx context.Context) error {
	if err := q.deliver(ctx, q.alice, q.bob, "Hi Bob! This is end-to-end encrypted; NATS only sees ciphertext."); err != nil {
		return err
	}
	return q.deliver(ctx, q.bob, q.alice, "Hi Alice, received. Signed by my key inside the envelope.")
}

// deliver sends text from one user to another and checks it arrives.
func (q *quick) deliver(ctx context.Context, from, to *user, text string) error {
	if _, err := from.chat.Send(ctx, to.name, text); err != nil {
		return fmt.Errorf("%s sends: %w", from.name, err)
	}
	q.say("      %s → %s: %q\n", from.name, to.name, text)
	got, err := q.receive(ctx, to, from)
	if err != nil {
		return err
	}
	if got.Text() != text {
		return fmt.Errorf("%s got %q, want %q", to.name, got.Text(), text)
	}
	q.say("      %s got it from @%s: decrypted, signature checked\n", to.name, got.Who())
	return nil
}

// receive fetches what waits in u's inbox and returns the one new message.
func (q *quick) receive(ctx context.Context, u, from *user) (*chat.Entry, error) {
	if _, err := u.chat.Sync(ctx); err != nil {
		return nil, fmt.Errorf("%s syncs: %w", u.name, err)
	}
	in, err := u.chat.Inbox(ctx, false)
	if err != nil {
		return nil, err
	}
	if len(in) != 1 || in[0].From != from.id.PublicKey() || in[0].Trust != chat.TrustTrusted {
		return nil, fmt.Errorf("%s's inbox has %d new messages, want one trusted message from %s", u.name, len(in), from.name)
	}
	return in[0], nil
}

func (q *quick) offline(ctx context.Context) error {
	if err := q.offlineUser(q.bob); err != nil {
		return err
	}
	q.say("      bob closed his client\n")
	text := "Are you there? This waits for you in NATS JetStream."
	sent, err := q.alice.chat.Send(ctx, "bob", text)
	if err != nil {
		return fmt.Errorf("alice sends: %w", err)
	}
	q.say("      alice → bob: %q (stored by the broker, stream sequence %d)\n", text, sent.Seq)

	if err := q.online(ctx, q.bob); err != nil {
		return err
	}
	got, err := q.receive(ctx, q.bob, q.alice)
	if err != nil {
		return err
	}
	if got.Text() != text {
		return fmt.Errorf("bob got %q, want %q", got.Text(), text)
	}
	q.say("      bob is back and reads: %q\n", got.Text())

	// bob's client sent alice a signed delivery receipt; she picks it up
	// the next time she syncs.
	at, err := waitDelivered(ctx, q.alice.chat, sent.ID)
	if err != nil {
		return err
	}
	q.say("      alice sees bob's receipt: delivered at %s\n", at.Format("15:04:05.000"))
	return nil
}

// waitDelivered syncs c until the receipt for its sent message id has
// arrived, and returns the delivery time the receipt states.
func waitDelivered(ctx context.Context, c *chat.Client, id chat.MessageID) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		if _, err := c.Sync(ctx); err != nil {
			return time.Time{}, err
		}
		e, err := c.Message(ctx, c.Key(), id)
		if err != nil {
			return time.Time{}, err
		}
		if !e.DeliveredAt.IsZero() {
			return e.DeliveredAt, nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, errors.New("no delivery receipt within 30 s")
		case <-time.After(50 * time.Millisecond): // the receipt is sent a moment after delivery
		}
	}
}

func (q *quick) users() []*user { return []*user{q.alice, q.bob, q.carol} }

// cleanup closes the clients and file sharing, stops the stack and removes the temporary
// folder. It is safe to call at any point.
func (q *quick) cleanup() error {
	errs := []error{q.closeFiles()} // before the chat clients: it uses their NATS logins
	for _, u := range []*user{q.alice, q.bob, q.carol} {
		if u != nil && u.chat != nil {
			errs = append(errs, q.offlineUser(u))
		}
	}
	for _, u := range []*user{q.alice, q.bob, q.carol} {
		if u != nil {
			errs = append(errs, u.client.Close()) // the log pins Discover opened
		}
	}
	if q.stack != nil {
		errs = append(errs, q.stack.Close())
	}
	if q.dir != "" {
		errs = append(errs, os.RemoveAll(q.dir))
	}
	return errors.Join(errs...)
}
