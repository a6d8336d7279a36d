package main

import (
	"context"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
)

// The bot, run as its main does, on a real stack: alice writes to it and
// gets her words back, signed by the bot's key.
func TestEchoBotAnswers(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	bot := st.NewUser(t, "echo")
	alice := st.NewUser(t, "alice")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	botCtx, stopBot := context.WithCancel(ctx)
	botDone := make(chan error, 1)
	env := st.Env(bot)
	go func() { botDone <- run(botCtx, func(k string) string { return env[k] }) }()
	t.Cleanup(func() {
		stopBot()
		if err := <-botDone; err != nil {
			t.Errorf("the bot's run: %v", err)
		}
	})

	ac, err := chat.Open(ctx, chat.Config{Client: client.Config{
		Identity: alice.Identity, Home: alice.Home, NATSURL: st.NATSURL, ServerURL: st.ServerURL,
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close()
	if _, err := ac.AddContact(ctx, "echo"); err != nil {
		t.Fatal(err)
	}
	got := make(chan *chat.Entry, 4)
	runCtx, stopRun := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- ac.Run(runCtx, func(e *chat.Entry) { got <- e }) }()
	defer func() { stopRun(); <-runDone }()

	for _, text := range []string{"hello", "how are you?"} {
		if _, err := ac.Send(ctx, "echo", text); err != nil {
			t.Fatalf("send %q: %v", text, err)
		}
		select {
		case e := <-got:
			if e.Text() != "echo: "+text || e.From != bot.Key || e.Trust != chat.TrustTrusted {
				t.Errorf("answer to %q: %q from %s (%s)", text, e.Text(), e.Who(), e.Trust)
			}
		case err := <-botDone:
			botDone <- err // for the cleanup
			t.Fatalf("the bot stopped: %v", err)
		case <-ctx.Done():
			t.Fatalf("no answer to %q", text)
		}
	}
}

// Without an identity the bot says so instead of starting.
func TestEchoBotWithoutIdentity(t *testing.T) {
	dir := t.TempDir()
	err := run(context.Background(), func(k string) string {
		if k == "KEZ_HOME" {
			return dir
		}
		return ""
	})
	if err == nil {
		t.Fatal("run without an identity returned nil")
	}
}
