package chat

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/chatserver"
	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/session"
)

// crashChild is the child process of TestCrashWhileSendingLosesNothing:
// the user of KEZ_TEST_USER, with the state folder KEZ_HOME. Mode "send"
// sends to bob from crashSenders goroutines, printing a line for each
// message the stream stored, until it is killed; mode "drain" opens the
// client (which publishes again what was left pending), shuts down once
// the stream acknowledged it, and prints "drained".
func crashChild(mode string) int {
	ctx := context.Background()
	cfg := Config{Client: client.Config{
		Identity:     stacktest.Identity(os.Getenv("KEZ_TEST_USER")),
		Home:         os.Getenv("KEZ_HOME"),
		NATSURL:      os.Getenv("NATS_URL"),
		ServerURL:    os.Getenv("KEZ_SERVER"),
		SigServerURL: os.Getenv("KEZ_SIG_SERVER"),
		Domain:       os.Getenv("KEZ_DOMAIN"),
		Logger:       slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}, AckWait: 300 * time.Millisecond} // deliveries to a killed run come back soon
	c, err := Open(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		return 1
	}
	if mode == "receive" {
		// Receives until killed, printing each message handed to Run's
		// handler (shown) and each one Inbox lists as not shown before.
		var mu sync.Mutex
		// Shown: marked read, then printed (a kill in between loses the
		// line, never makes it twice).
		show := func(e *Entry) {
			if err := c.MarkRead(ctx, e); err != nil {
				fmt.Fprintln(os.Stderr, "mark read:", err)
				return
			}
			mu.Lock()
			fmt.Printf("shown %s\n", e.ID)
			mu.Unlock()
		}
		if es, err := c.Inbox(ctx, false); err == nil {
			for _, e := range es {
				show(e)
			}
		}
		err := c.Run(ctx, show)
		fmt.Fprintln(os.Stderr, "run:", err)
		return 1
	}
	if mode == "drain" {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if os.Getenv("KEZ_TEST_USER") == "bob" {
			// The receiver: take what waits (what a killed run was given
			// comes back after the ack wait) until it holds KEZ_EXPECT
			// messages, then list the whole history.
			want, _ := strconv.Atoi(os.Getenv("KEZ_EXPECT"))
			var es []*Entry
			for {
				if _, err := c.fetchOnce(sctx, time.Second); err != nil {
					fmt.Fprintln(os.Stderr, "sync:", err)
					return 1
				}
				var err error
				if es, err = c.History(sctx, "alice", 0); err != nil {
					fmt.Fprintln(os.Stderr, "history:", err)
					return 1
				}
				if len(es) >= want || sctx.Err() != nil {
					break
				}
			}
			for _, e := range es {
				fmt.Printf("stored %s\n", e.ID)
			}
		}
		if err := c.Shutdown(sctx); err != nil {
			fmt.Fprintln(os.Stderr, "shutdown:", err)
			return 1
		}
		fmt.Println("drained")
		return 0
	}
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	for g := range crashSenders {
		wg.Go(func() {
			for j := 0; j < 1000; j++ {
				if _, err := c.Send(ctx, "bob", fmt.Sprintf("%s/%d/%d", os.Getenv("KEZ_TAG"), g, j)); err != nil {
					fmt.Fprintln(os.Stderr, "send:", err)
					continue
				}
				mu.Lock()
				out.WriteString("sent\n")
				out.Flush()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return 0
}

// crashSenders is how many sends the child keeps going at once.
const crashSenders = 4

// envelopeKeyOf names the message key a session envelope was sealed with:
// its session, ratchet public key and message number. Two different
// envelopes with one name mean a message key sealed two messages.
func envelopeKeyOf(env []byte) (string, bool) {
	h, err := session.ParseHeader(env)
	if err != nil {
		return "", false
	}
	off := 86 // type 2: "KEZM" 2 2 | sender | recipient | session_id
	if h.Type == session.TypeHandshake {
		off = 78 + 1120 + 32 + 64 // the handshake prefix
	}
	if len(env) < off+40 {
		return "", false
	}
	return fmt.Sprintf("%x/%x/%x", h.SessionID, env[off:off+32], env[off+36:off+40]), true
}

// A client killed with SIGKILL at random points while it sends loses no
// message, shows none twice, and never seals two messages with one key:
// every message its history holds reaches the recipient exactly once, and
// no two different envelopes the stream stored share a message key.
func TestCrashWhileSendingLosesNothing(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	home, rng := crashSetup(t, st, au, "bob")
	bob := openClient(t, st, bu)
	mustAdd(t, bob, "alice")
	child := func(mode, tag string) *exec.Cmd { return crashCmd(t, st, "alice", home, mode, "KEZ_TAG="+tag) }
	const rounds = 6
	for round := range rounds {
		cmd := child("send", strconv.Itoa(round))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Killed once k messages were stored, with more in flight: in
		// the middle of sealing, storing, publishing or recording.
		k := 1 + rng.IntN(40)
		sc := bufio.NewScanner(stdout)
		for i := 0; i < k && sc.Scan(); i++ {
		}
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
		t.Logf("round %d: killed after %d messages stored", round, k)
	}
	drain := child("drain", "drain")
	if out, err := drain.Output(); err != nil || string(out) != "drained\n" {
		t.Fatalf("the last run: %q, %v", out, err)
	}

	// What alice's history holds was stored before it was published:
	// exactly what bob must get.
	offline, err := Open(testCtx(t), Config{Client: client.Config{Identity: au.Identity, Home: home}})
	if err != nil {
		t.Fatal(err)
	}
	sent, err := offline.History(testCtx(t), bu.Key.String(), 0)
	offline.Close()
	if err != nil {
		t.Fatal(err)
	}
	want := map[MessageID]string{}
	for _, e := range sent {
		if e.State != StateSent {
			t.Errorf("message %q is %s after the last run", e.Text(), e.State)
		}
		want[e.ID] = e.Text()
	}

	keys := map[string][]byte{}
	ctx := testCtx(t)
	for got := 0; got < len(want); {
		msgs, err := bob.cons.Fetch(ctx, fetchBatch, 2*time.Second)
		if err != nil || len(msgs) == 0 {
			t.Fatalf("bob has %d of %d messages (%v); stats %+v", got, len(want), err, bob.Stats())
		}
		for _, m := range msgs {
			name, ok := envelopeKeyOf(m.Data())
			if !ok {
				t.Fatalf("a delivery that is no session envelope: %q", wireForm(m.Data()))
			}
			if prev, seen := keys[name]; seen && !bytes.Equal(prev, m.Data()) {
				t.Errorf("two different envelopes sealed with one message key (%s)", name)
			}
			keys[name] = m.Data()
		}
		fresh, err := bob.process(ctx, msgs)
		if err != nil {
			t.Fatal(err)
		}
		got += len(fresh)
	}
	h, err := bob.History(ctx, "alice", 0)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[MessageID]bool{}
	for _, e := range h {
		if seen[e.ID] || want[e.ID] != e.Text() {
			t.Errorf("bob has %q (%s) twice, or alice never recorded it", e.Text(), e.ID)
		}
		seen[e.ID] = true
	}
	if len(seen) != len(want) {
		t.Errorf("bob has %d messages, alice recorded %d", len(seen), len(want))
	}
	if s := bob.Stats(); s.Rejected != 0 || s.Undecryptable != 0 {
		t.Errorf("bob's stats: %+v", s)
	}
	t.Logf("%d messages in %d rounds; bob's stats %+v", len(want), rounds, bob.Stats())
}

// A receiver killed with SIGKILL at random points while messages arrive
// loses none and shows none twice: after its last run its history holds
// every message sent, once, and no message was handed on (and marked
// read) in two runs.
func TestCrashWhileReceivingLosesNothing(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{MailLimits: chatserver.MailLimits{SenderRate: -1, RecipientRate: -1}})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	home, rng := crashSetup(t, st, bu, "alice")
	alice := openClient(t, st, au)
	mustAdd(t, alice, "bob")
	child := func(mode string) *exec.Cmd { return crashCmd(t, st, "bob", home, mode) }
	shown, stored := map[string]int{}, map[string]int{}
	record := func(line string) {
		if id, ok := strings.CutPrefix(line, "shown "); ok {
			shown[id]++
		}
		if id, ok := strings.CutPrefix(line, "stored "); ok {
			stored[id]++
		}
	}
	sent := map[string]bool{}
	const rounds, perRound = 6, 30
	for round := range rounds {
		cmd := child("receive")
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Alice sends while bob's process receives; it is killed after
		// k of them were shown, in the middle of the others.
		var ids []string
		var wg sync.WaitGroup
		wg.Go(func() {
			for i := range perRound {
				s, err := alice.Send(testCtx(t), "bob", fmt.Sprint("round ", round, " message ", i))
				if err != nil {
					t.Error(err)
					return
				}
				ids = append(ids, s.ID.String())
			}
		})
		k := 1 + rng.IntN(perRound-1)
		sc := bufio.NewScanner(stdout)
		for i := 0; i < k && sc.Scan(); i++ {
			record(sc.Text())
		}
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		for sc.Scan() { // what it printed before it died
			record(sc.Text())
		}
		cmd.Wait()
		wg.Wait()
		for _, id := range ids {
			sent[id] = true
		}
		t.Logf("round %d: killed after %d messages shown", round, k)
	}
	drain := child("drain")
	drain.Env = append(drain.Env, "KEZ_EXPECT="+strconv.Itoa(len(sent)))
	out, err := drain.Output()
	if err != nil || !strings.HasSuffix(string(out), "drained\n") {
		t.Fatalf("the last run: %q, %v", out, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		record(line)
	}
	for id, n := range shown {
		if n != 1 || !sent[id] {
			t.Errorf("message %s shown %d times (sent: %v)", id, n, sent[id])
		}
	}
	for id := range sent {
		if stored[id] != 1 {
			t.Errorf("message %s was sent and is stored %d times", id, stored[id])
		}
	}
	if len(stored) != len(sent) {
		t.Errorf("bob stored %d messages, alice sent %d", len(stored), len(sent))
	}
	t.Logf("%d messages sent, %d shown live, %d stored, over %d rounds", len(sent), len(shown), len(stored), rounds)
}

// crashSetup makes u's state folder, with contact as a contact, for the
// child processes, and the test's random source (its seed logged).
func crashSetup(t *testing.T, st *stacktest.Stack, u *stacktest.User, contact string) (string, *rand.Rand) {
	t.Helper()
	home := filepath.Join(t.TempDir(), u.Name)
	setup := openClientIn(t, st, u, home)
	mustAdd(t, setup, contact)
	if err := setup.Close(); err != nil {
		t.Fatal(err)
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	return home, rand.New(rand.NewPCG(seed, seed>>1))
}

// crashCmd is this test binary run as the crash child of user in home.
func crashCmd(t *testing.T, st *stacktest.Stack, user, home, mode string, env ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envCrashChild+"="+mode, "KEZ_TEST_USER="+user, "KEZ_HOME="+home,
		"NATS_URL="+st.NATSURL, "KEZ_SERVER="+st.ServerURL, "KEZ_SIG_SERVER="+st.SigServerURL, "KEZ_DOMAIN="+st.Domain)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = &testWriter{t: t, prefix: user + " " + mode + ": "}
	return cmd
}

// testWriter writes a child's stderr to the test log, line by line.
type testWriter struct {
	t      *testing.T
	prefix string
	mu     sync.Mutex
	buf    []byte
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		w.t.Log(w.prefix + string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
}
