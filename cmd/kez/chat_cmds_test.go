package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
)

func inboxLines(t *testing.T, out string) []inboxJSON {
	t.Helper()
	var got []inboxJSON
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		var m inboxJSON
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("inbox --json line %q: %v", l, err)
		}
		for _, k := range []string{`"id"`, `"from"`, `"text"`, `"sent_at"`} {
			if !strings.Contains(l, k) {
				t.Errorf("inbox --json line lacks %s: %s", k, l)
			}
		}
		got = append(got, m)
	}
	return got
}

func TestSendInboxContacts(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu, cu := st.NewUser(t, "alice"), st.NewUser(t, "bob"), st.NewUser(t, "carol")
	alice, bob, carol := st.Env(au), st.Env(bu), st.Env(cu)

	// Sending needs a contact, and says how to add one.
	r := kezCmd(t, alice, "", "send", "bob", "hi")
	if r.code != 1 || !strings.Contains(r.stderr, "bob@kez.test is not a contact yet: run kez contacts add bob@kez.test") {
		t.Fatalf("send to a non-contact: exit %d\n%s", r.code, r.stderr)
	}
	r = mustRun(t, alice, "", "contacts", "add", "bob")
	if !strings.Contains(r.stdout, "Added @bob@kez.test") || !strings.Contains(r.stdout, bu.Key.Fingerprint()) || !strings.Contains(r.stdout, `"kez contacts verify bob@kez.test" shows the safety number`) {
		t.Errorf("contacts add:\n%s", r.stdout)
	}
	// No verify command with digits ready-made: verifying is comparing
	// with what bob reads out.
	if strings.Count(r.stdout, bu.Key.Fingerprint()) != 1 || strings.Contains(r.stdout, "verify bob@kez.test 1") {
		t.Errorf("contacts add suggests a verify command with the fingerprint filled in:\n%s", r.stdout)
	}
	var list []contactJSON
	if err := json.Unmarshal([]byte(mustRun(t, alice, "", "contacts", "list", "--json").stdout), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Handle != "bob@kez.test" || list[0].Key != bu.Key.String() || list[0].Verified || list[0].Flag != "" {
		t.Fatalf("contacts list --json: %+v", list)
	}
	if r := kezCmd(t, alice, "", "contacts", "verify", "bob", "12345", "67890"); r.code != 1 || !strings.Contains(r.stderr, "typed 10 digits") {
		t.Errorf("verify with a wrong fingerprint: exit %d\n%s", r.code, r.stderr)
	}
	mustRun(t, alice, "", append([]string{"contacts", "verify", "bob"}, strings.Fields(bu.Key.Fingerprint())...)...)
	if r := mustRun(t, alice, "", "contacts", "list"); !strings.Contains(r.stdout, "@bob@kez.test") || !strings.Contains(r.stdout, "verified") {
		t.Errorf("contacts list:\n%s", r.stdout)
	}

	// Two messages while bob is offline: one as an argument, one on stdin.
	if r := mustRun(t, alice, "", "send", "bob", "hello", "bob"); !strings.Contains(r.stdout, "Sent to @bob@kez.test") {
		t.Errorf("send:\n%s", r.stdout)
	}
	var sent sendJSON
	if err := json.Unmarshal([]byte(mustRun(t, alice, "second line\n", "send", "--json", "bob").stdout), &sent); err != nil || sent.Seq == 0 || sent.To != "bob@kez.test" {
		t.Fatalf("send --json: %+v, %v", sent, err)
	}
	if r := kezCmd(t, alice, "", "send", "bob"); r.code != 2 {
		t.Errorf("send with nothing to send: exit %d", r.code)
	}

	// Bob reads them once, in order; a stranger's message is a request.
	mustRun(t, bob, "", "contacts", "add", "alice")
	mustRun(t, carol, "", "contacts", "add", "bob")
	mustRun(t, carol, "", "send", "bob", "hi, it is carol")
	r = mustRun(t, bob, "", "inbox", "--json")
	got := inboxLines(t, r.stdout)
	if len(got) != 2 || got[0].Text != "hello bob" || got[1].Text != "second line" || got[0].From != "alice@kez.test" || got[1].ID != sent.ID {
		t.Fatalf("inbox --json: %+v", got)
	}
	if !strings.Contains(r.stderr, "1 message request(s)") {
		t.Errorf("no note about the request:\n%s", r.stderr)
	}
	if r := mustRun(t, bob, "", "inbox", "--json"); strings.TrimSpace(r.stdout) != "" {
		t.Errorf("second inbox shows:\n%s", r.stdout)
	}
	if r := mustRun(t, bob, "", "inbox"); !strings.Contains(r.stdout, "No new messages.") {
		t.Errorf("third inbox:\n%s", r.stdout)
	}
	if all := inboxLines(t, mustRun(t, bob, "", "inbox", "--all", "--json").stdout); len(all) != 2 {
		t.Errorf("inbox --all: %d messages", len(all))
	}
	reqs := inboxLines(t, mustRun(t, bob, "", "inbox", "--requests", "--json").stdout)
	if len(reqs) != 1 || reqs[0].From != "carol@kez.test" || reqs[0].Trust != "request" {
		t.Errorf("inbox --requests: %+v", reqs)
	}
	if r := mustRun(t, bob, "", "inbox", "--all"); !strings.Contains(r.stdout, "@alice@kez.test: hello bob") {
		t.Errorf("inbox (text):\n%s", r.stdout)
	}

	// kez chat: bob answers two lines, then leaves.
	r = mustRun(t, bob, "thanks alice\n\nsee you\n/quit\nnot sent\n", "chat", "alice")
	if !strings.Contains(r.stdout, "talking with @alice@kez.test") || !strings.Contains(r.stdout, "hello bob") {
		t.Errorf("chat output:\n%s", r.stdout)
	}
	got = inboxLines(t, mustRun(t, alice, "", "inbox", "--json").stdout)
	if len(got) != 2 || got[0].Text != "thanks alice" || got[1].Text != "see you" {
		t.Errorf("alice's inbox after bob's chat: %+v", got)
	}
}

// lineWriter is an io.Writer that hands every complete line to a channel.
type lineWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	lines chan string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	for {
		l, err := w.buf.ReadString('\n')
		if err != nil {
			w.buf.WriteString(l)
			return len(p), nil
		}
		w.lines <- strings.TrimSuffix(l, "\n")
	}
}

// inbox --follow prints a message as it arrives; send --wait returns once
// the follower's client sent its delivery receipt.
func TestInboxFollowAndSendWait(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	alice, bob := st.Env(au), st.Env(bu)
	mustRun(t, alice, "", "contacts", "add", "bob")
	mustRun(t, bob, "", "contacts", "add", "alice")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &lineWriter{lines: make(chan string, 100)}
	var errb bytes.Buffer
	done := make(chan int, 1)
	go func() {
		e := &env{stdin: strings.NewReader(""), stdout: out, stderr: &errb, getenv: func(k string) string { return bob[k] }}
		done <- run(ctx, e, []string{"inbox", "--follow", "--json"})
	}()

	r := mustRun(t, alice, "", "send", "--wait", "--timeout", "20s", "bob", "live message")
	if !strings.Contains(r.stdout, "Delivered at") {
		t.Errorf("send --wait:\n%s", r.stdout)
	}
	select {
	case l := <-out.lines:
		if got := inboxLines(t, l); len(got) != 1 || got[0].Text != "live message" {
			t.Errorf("follow printed %q", l)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("inbox --follow printed nothing")
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("inbox --follow exited %d\n%s", code, errb.String())
	}
	// What follow printed is not new any more.
	if r := mustRun(t, bob, "", "inbox", "--json"); strings.TrimSpace(r.stdout) != "" {
		t.Errorf("inbox after follow shows:\n%s", r.stdout)
	}
}

// send --wait without a receipt in time exits 3, not 1: the message was
// sent, and a script that retried on 1 would send it twice.
func TestSendWaitNoReceiptExits3(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	alice, bob := st.Env(au), st.Env(bu)
	mustRun(t, alice, "", "contacts", "add", "bob")

	// Bob is offline, so no receipt can come, however long the timeout.
	r := kezCmd(t, alice, "", "send", "--wait", "--timeout", "1s", "bob", "first")
	if r.code != exitNoReceipt || !strings.Contains(r.stderr, "sent (message") || !strings.Contains(r.stderr, "no delivery receipt") {
		t.Fatalf("send --wait to an offline contact: exit %d, want %d\n%s", r.code, exitNoReceipt, r.stderr)
	}
	r = kezCmd(t, alice, "", "send", "--wait", "--timeout", "1s", "--json", "bob", "second")
	var sent sendJSON
	if err := json.Unmarshal([]byte(r.stdout), &sent); r.code != exitNoReceipt || err != nil || sent.Seq == 0 || sent.DeliveredAt != nil {
		t.Fatalf("send --wait --json to an offline contact: exit %d, %+v, %v\n%s", r.code, sent, err, r.stderr)
	}

	// Both were sent, once each.
	mustRun(t, bob, "", "contacts", "add", "alice")
	got := inboxLines(t, mustRun(t, bob, "", "inbox", "--json").stdout)
	if len(got) != 2 || got[0].Text != "first" || got[1].Text != "second" || got[1].ID != sent.ID {
		t.Errorf("bob's inbox: %+v", got)
	}
}

// A state folder that lost chat.db cannot decrypt what was sent in its
// old sessions: kez inbox says how many messages and that a new session
// was started, and they come on the next inbox.
func TestInboxSaysSessionReset(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	alice, bob := st.Env(au), st.Env(bu)
	mustRun(t, alice, "", "contacts", "add", "bob")
	mustRun(t, bob, "", "inbox") // publishes bob's prekey
	mustRun(t, alice, "", "send", "bob", "sent before the loss")
	for _, f := range []string{"chat.db", "chat.db-wal", "chat.db-shm"} {
		if err := os.Remove(filepath.Join(bu.Home, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
	mustRun(t, bob, "", "contacts", "add", "alice")
	r := mustRun(t, bob, "", "inbox")
	// Two: alice's log view (docs/spec/chat.md §11) went before the
	// message, in the same session.
	if want := "@alice@kez.test: 2 messages could not be decrypted (session reset); a new session was started and they will be sent again"; !strings.Contains(r.stderr, want) {
		t.Errorf("inbox after losing chat.db:\n%s\nwant %q", r.stderr, want)
	}
	mustRun(t, alice, "", "inbox") // takes bob's new session, sends again
	deadline := time.Now().Add(20 * time.Second)
	for r = mustRun(t, bob, "", "inbox"); !strings.Contains(r.stdout, "sent before the loss"); r = mustRun(t, bob, "", "inbox") {
		if time.Now().After(deadline) {
			t.Fatalf("the message never came again; last inbox:\n%s\n%s", r.stdout, r.stderr)
		}
	}
}

func TestChatCommandsUsage(t *testing.T) {
	for _, args := range [][]string{
		{"contacts"}, {"contacts", "remove", "bob"}, {"contacts", "add"}, {"contacts", "verify"},
		{"send"}, {"chat"}, {"inbox", "extra"},
	} {
		if r := kezCmd(t, nil, "", args...); r.code != 2 {
			t.Errorf("kez %s: exit %d, want 2\n%s", strings.Join(args, " "), r.code, r.stderr)
		}
	}
	home, _ := newHome(t)
	if r := kezCmd(t, map[string]string{"KEZ_HOME": home}, "", "inbox"); r.code != 1 || !strings.Contains(r.stderr, "NATS_URL") {
		t.Errorf("inbox without NATS: exit %d\n%s", r.code, r.stderr)
	}
}

// TestSendRefusalsAreSentences: the gate's refusals reach the user as
// sentences that say nothing was sent.
func TestSendRefusalsAreSentences(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("chat: the stream did not store message x: %w", chat.ErrUnknownRecipient), "holds no handle there"},
		{fmt.Errorf("chat: x: %w", &chat.QuotaError{Limit: "sender"}), "sending faster than the chat-server allows"},
		{fmt.Errorf("chat: x: %w", &chat.QuotaError{Limit: "unread"}), "not read the many messages"},
		{fmt.Errorf("chat: x: %w", &chat.QuotaError{Limit: "recipient"}), "taking in more mail"},
		{fmt.Errorf("chat: x: %w", &chat.QuotaError{Limit: "stream"}), "store is full"},
	} {
		msg := (&env{}).sentence(tc.err)
		if !strings.Contains(msg, tc.want) || !strings.Contains(msg, "nothing was sent") {
			t.Errorf("%v → %q", tc.err, msg)
		}
	}
}
