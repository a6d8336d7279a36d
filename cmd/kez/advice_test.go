package main

import (
	"errors"
	"fmt"
	"io/fs"
	"syscall"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/natsconn"
	"github.com/kez-lat/kez-chat/sigchain"
)

// The SDK's errors carry no CLI advice; the CLI adds it from their types,
// also when they are wrapped.
func TestAdvice(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("files: fetching: %w", err) }
	for _, c := range []struct {
		err         error
		chat, files string
	}{
		{&files.OfflineError{Owner: "alice"}, "ask them to run kez serve, or use --wait", "ask them to run kez serve, or use --wait"},
		{wrap(&files.OfflineError{Owner: "alice", Waited: time.Minute}), "ask them to run kez serve", "ask them to run kez serve"},
		{&files.NotSharedError{What: "x"}, "list yours with kez files", "list yours with kez files"},
		{wrap(&files.NotSharedError{Owner: "bob@kez.lat", What: "x"}), "list them with kez files bob@kez.lat", "list them with kez files bob@kez.lat"},
		{wrap(natsconn.ErrNotRegistered), "register a handle first (kez register NAME), or ask the operator whether the chat server is running", "register a handle first (kez register NAME), or ask the operator whether the chat server is running"},
		{wrap(natsconn.ErrUnreachable), "check NATS_URL and that the server is running", "check NATS_URL and that the server is running"},
		{files.ErrNoNATS, "set NATS_URL (signalling between peers goes through the broker)", "set NATS_URL (signalling between peers goes through the broker)"},
		{files.ErrNoSigServer, "set KEZ_SIG_SERVER to the sig-server that holds your sigchain", "set KEZ_SIG_SERVER to the sig-server that holds your sigchain"},
		{files.ErrNoResolver, "set KEZ_SERVER to your chat-server, which looks up handles", "set KEZ_SERVER to your chat-server, which looks up handles"},
		// Only package files' "you have no sigchain" is the user's own.
		{wrap(sigchain.ErrNotFound), "", "register first (kez register NAME)"},
		// Only chat.Open's state folder is KEZ_HOME.
		{fmt.Errorf("chat: opening: %w", syscall.EROFS), "set KEZ_HOME to a writable folder", ""},
		{fmt.Errorf("chat: opening: %w", fs.ErrPermission), "fix its permissions or set KEZ_HOME", ""},
		{errors.New("something else"), "", ""},
	} {
		if got := chatAdvice(c.err); got != c.chat {
			t.Errorf("chatAdvice(%v) = %q, want %q", c.err, got, c.chat)
		}
		if got := filesAdvice(c.err); got != c.files {
			t.Errorf("filesAdvice(%v) = %q, want %q", c.err, got, c.files)
		}
	}
	if got := filesError(&files.OfflineError{Owner: "alice@kez.lat"}).Error(); got != "alice@kez.lat is offline; ask them to run kez serve, or use --wait" {
		t.Errorf("filesError: %q", got)
	}
}
