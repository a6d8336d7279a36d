package systemtest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/nats-io/nats.go"
)

// sendWithin sends text from a to b's handle with a deadline.
func sendWithin(a *client, to string, text string, d time.Duration) (chat.Sent, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return a.Send(ctx, to, text)
}

// TestChatServerDownFailsClosed stops the chat-server (its callout and its
// gate stop answering): new NATS logins are refused, logins made before
// stay connected until their user JWT expires but cannot store mail (the
// gate stands between users and the stream), and once the chat-server is
// back, the cut-off clients log in again by themselves and everything
// works; nothing acknowledged is lost.
func TestChatServerDownFailsClosed(t *testing.T) {
	t.Parallel() // mostly waiting on other processes
	const jwtLife = 3 * time.Second
	sys := startSystem(t, sysOptions{jwtLifetime: jwtLife})
	alice, bob := sys.open(t, sys.register(t, "alice"), ""), sys.open(t, sys.register(t, "bob"), "")
	carol := sys.register(t, "carol")
	befriend(t, alice, bob)
	tl := newTally()
	bob.run(t, tl.handler(bob.u.key))

	sys.stopChat(0)
	loggedIn := time.Now()

	// A new login fails closed, with the error that says so.
	ctx := testCtx(t, 30*time.Second)
	if nc, err := chat.Connect(ctx, sys.natsURL, carol.id, nats.NoReconnect()); !errors.Is(err, chat.ErrNotRegistered) {
		if nc != nil {
			nc.Close()
		}
		t.Fatalf("a new login with the chat-server down: %v, want ErrNotRegistered", err)
	}
	// So does the registration API behind the operator's front.
	if _, err := (&handles.Client{BaseURL: sys.chatURL}).Lookup(ctx, "alice"); err == nil {
		t.Fatal("handle lookup answered with the chat-server down")
	}

	// Existing logins stay connected, but no mail is stored without the
	// gate: the send is not acknowledged (the sender knows it is not sent)…
	if !alice.Conn().IsConnected() {
		t.Fatal("alice was cut off before her JWT expired")
	}
	if _, err := sendWithin(alice, "bob@"+domain, "while the chat-server is down", 2*time.Second); err == nil {
		t.Fatal("a message was stored with the chat-server's gate down")
	}
	// … and the broker cuts them off once it expires: the login cannot be
	// renewed without the callout.
	eventually(t, jwtLife+20*time.Second, "alice cut off after her JWT expired", func() bool { return !alice.Conn().IsConnected() })
	cutOff := time.Since(loggedIn)
	if _, err := sendWithin(alice, "bob@"+domain, "after expiry", 2*time.Second); err == nil {
		t.Fatal("sent after the user JWT expired with the chat-server down")
	}

	// The outage lasts: several login attempts are refused (each waits out
	// the broker's 2 s auth timeout). The clients must keep trying.
	time.Sleep(5 * time.Second) // the outage lasts past two refused logins (2 s auth timeout each), a scenario parameter
	if alice.Conn().IsClosed() {
		t.Fatal("alice's client gave up logging in during the outage")
	}

	// The chat-server comes back: clients log in again by themselves.
	sys.startChat(t, 0)
	sys.waitChatReady(t, 0)
	eventually(t, 30*time.Second, "alice logged in again", alice.Conn().IsConnected)
	eventually(t, 30*time.Second, "bob logged in again", bob.Conn().IsConnected)
	s, err := sendWithin(alice, "bob@"+domain, "after the restart", 20*time.Second)
	tl.sent(alice.u.key, bob.u.key, s, err)
	if err != nil {
		t.Fatalf("after the chat-server restarted: %v", err)
	}
	nc, err := chat.Connect(ctx, sys.natsURL, carol.id)
	if err != nil {
		t.Fatalf("a new login after the restart: %v", err)
	}
	nc.Close()
	f := tl.waitDelivered(t, 30*time.Second)
	t.Logf("chat-server down: new login refused (ErrNotRegistered); existing login cut off %.1fs after the callout stopped (JWT lifetime %s); after restart: %s",
		cutOff.Seconds(), jwtLife, f)
	if f.Lost != 0 || f.Duplicated != 0 {
		t.Fatalf("%s", f)
	}
}

// TestSigServerDown takes the sig-server down: a client still sends to a
// contact it pinned (no sig-server needed), a look-up of someone new
// fails with an error saying the sig-server cannot be reached, and once
// it is back, appends and look-ups work again.
func TestSigServerDown(t *testing.T) {
	sys := startSystem(t, sysOptions{})
	alice, bob := sys.open(t, sys.register(t, "alice"), ""), sys.open(t, sys.register(t, "bob"), "")
	dave := sys.register(t, "dave")
	befriend(t, alice, bob)
	tl := newTally()
	bob.run(t, tl.handler(bob.u.key))

	sys.sig.stop()

	s, err := sendWithin(alice, "bob@"+domain, "to a pinned contact", 20*time.Second)
	tl.sent(alice.u.key, bob.u.key, s, err)
	if err != nil {
		t.Fatalf("sending to a pinned contact with the sig-server down: %v", err)
	}
	_, err = alice.AddContact(testCtx(t, 30*time.Second), dave.handle.String())
	if !errors.Is(err, sigchain.ErrUnreachable) {
		t.Fatalf("a new look-up with the sig-server down: %v, want sigchain.ErrUnreachable", err)
	}
	t.Logf("new look-up with the sig-server down: %v", err)
	// An append (a new user registering) fails too, and says why.
	if _, err := sys.tryRegister("erin"); !errors.Is(err, sigchain.ErrUnreachable) {
		t.Fatalf("an append with the sig-server down: %v", err)
	}

	sys.sig.start(t)
	if _, err := alice.AddContact(testCtx(t, 30*time.Second), dave.handle.String()); err != nil {
		t.Fatalf("look-up after the sig-server came back: %v", err)
	}
	sys.register(t, "erin")
	s, err = sendWithin(alice, "bob@"+domain, "after", 20*time.Second)
	tl.sent(alice.u.key, bob.u.key, s, err)
	if err != nil {
		t.Fatal(err)
	}
	if f := tl.waitDelivered(t, 30*time.Second); f.Lost != 0 || f.Duplicated != 0 {
		t.Fatalf("%s", f)
	}
}
