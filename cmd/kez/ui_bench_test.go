package main

// The figures of "kez ui" (docs/performance.md): the built binary in a
// real pseudo-terminal (internal/testenv/ptytest), its output read through
// a VT screen model, each figure beside its baseline in the same run.
//
// Why a screen model rather than a byte search: Bubble Tea v2 draws with
// a cell renderer that sends only the cells that changed since the last
// frame, moves the cursor between them, and may shorten runs (erase and
// repeat-character sequences). A handle on the first frame happens to be
// one run of bytes, but a character typed into the compose box is a
// one-cell change whose bytes say nothing about where it lands, and the
// same character may be drawn in the history at the same moment. Both
// figures therefore wait on what the screen shows: the text of one row.
// Feeding the emulator costs the harness microseconds per frame, far
// below the figures' resolution.
//
//	go test ./cmd/kez -run '^$' -bench 'UIStartup' -benchtime 20x
//	go test ./cmd/kez -run '^$' -bench 'UIKeystroke' -benchtime 300x

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/chatserver"
	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/internal/testenv/ptytest"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
)

// uiBenchWait bounds one wait on the UI's screen.
const uiBenchWait = time.Minute

// keystrokeSamples is the least number of keystrokes the latency
// percentiles are computed from, however few iterations b.Loop ran.
const keystrokeSamples = 200

// BenchmarkUIKeystroke measures keystroke-to-screen latency in "kez ui":
// alice's UI, on a dev stack, has bob's conversation open, and one
// character at a time is typed into the compose box; a sample is the time
// from writing the key to the pty to the character drawn in the compose
// box. "idle" is the baseline, "traffic" the same while bob's SDK client
// sends alice 100 messages a second (sent-msgs/s is what was sent). Both
// report p50-ms and p99-ms over at least 200 samples; ns/op is the mean.
func BenchmarkUIKeystroke(b *testing.B) {
	if err := ptytest.Available(); err != nil {
		b.Skipf("no pseudo-terminal: %v", err)
	}
	bin := builtKez(b)
	// The chat-server's default limits hold one sender to 20 messages a
	// second to one recipient: lift them, so that bob alone can send 100.
	st := stacktest.Start(b, stacktest.Options{MailLimits: chatserver.MailLimits{
		SenderRate: 1000, SenderBurst: 10_000, RecipientRate: 1000, RecipientBurst: 10_000, SenderUnread: -1,
	}})
	au, bu := st.NewUser(b, "alice"), st.NewUser(b, "bob")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// alice and bob are each other's contacts, and bob's conversation is
	// alice's newest, so it is the list's first row.
	alice := openChat(b, ctx, st, au)
	if _, err := alice.AddContact(ctx, "bob"); err != nil {
		b.Fatal(err)
	}
	alice.Close()
	bob := openChat(b, ctx, st, bu)
	b.Cleanup(func() { bob.Close() })
	if _, err := bob.AddContact(ctx, "alice"); err != nil {
		b.Fatal(err)
	}
	if _, err := bob.Send(ctx, "alice", "hello from bob"); err != nil {
		b.Fatal(err)
	}

	tm := startPtyUI(b, bin, uiEnv(b, st.Env(au)))
	wctx, wcancel := context.WithTimeout(ctx, uiBenchWait)
	defer wcancel()
	if _, err := tm.WaitScreen(wctx, func(s ptytest.Screen) bool { return s.Contains("hello from bob") }); err != nil {
		b.Fatalf("bob's conversation is not listed: %v; screen:\n%s", err, tm.ScreenText())
	}
	tm.WriteString("\r") // Enter on the first row: bob's conversation, compose focused
	k := &keystrokes{b: b, tm: tm}

	b.Run("idle", func(b *testing.B) {
		k.b = b
		k.measure()
	})
	b.Run("traffic", func(b *testing.B) {
		k.b = b
		var sent atomic.Int64
		tctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- sendEvery(tctx, bob, "alice", 10*time.Millisecond, &sent) }()
		t0 := time.Now()
		k.measure()
		stop()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(sent.Load())/time.Since(t0).Seconds(), "sent-msgs/s")
		// The traffic reached the screen: the last message is drawn.
		last := "traffic " + strconv.FormatInt(sent.Load(), 10)
		if _, err := tm.WaitScreen(wctx, func(s ptytest.Screen) bool { return s.Contains(last) }); err != nil {
			b.Fatalf("%q is not drawn: %v; screen:\n%s", last, err, tm.ScreenText())
		}
	})
	quitPtyUI(b, wctx, tm, "\x03") // Ctrl+C quits from the compose box
}

// keystrokes types into the compose box of a UI: batches of distinct
// letters after a "=" that marks the batch's start on screen, so that the
// text typed so far is found on one row and nowhere else.
type keystrokes struct {
	b     *testing.B
	tm    *ptytest.Term
	typed string // the compose box's text
	next  int
}

const batchLetters = 24

func (k *keystrokes) measure() {
	var samples []time.Duration
	one := func(timed bool) {
		k.b.StopTimer() // a new batch is not a sample
		if len(k.typed) > batchLetters {
			k.clear()
		}
		if k.typed == "" {
			k.typeAndWait("=")
		}
		if timed {
			k.b.StartTimer()
		}
		c := string(rune('a' + k.next%26))
		k.next++
		t0 := time.Now()
		at := k.typeAndWait(c)
		samples = append(samples, at.Sub(t0))
	}
	for k.b.Loop() {
		one(true)
	}
	for len(samples) < keystrokeSamples {
		one(false)
	}
	slices.Sort(samples)
	var sum time.Duration
	for _, d := range samples {
		sum += d
	}
	k.b.ReportMetric(float64(sum.Nanoseconds())/float64(len(samples)), "ns/op")
	k.b.ReportMetric(ms(percentile(samples, 50)), "p50-ms")
	k.b.ReportMetric(ms(percentile(samples, 99)), "p99-ms")
	k.b.ReportMetric(float64(len(samples)), "samples")
}

// typeAndWait types s and returns when the compose text with s appended
// was drawn.
func (k *keystrokes) typeAndWait(s string) time.Time {
	want := k.typed + s
	ctx, cancel := context.WithTimeout(context.Background(), uiBenchWait)
	defer cancel()
	if _, err := k.tm.WriteString(s); err != nil {
		k.b.Fatal(err)
	}
	at, err := k.tm.WaitScreen(ctx, func(s ptytest.Screen) bool { return s.Contains(want) })
	if err != nil {
		k.b.Fatalf("%q not drawn: %v; screen:\n%s", want, err, k.tm.ScreenText())
	}
	k.typed = want
	return at
}

// clear deletes the compose text with backspaces and waits until it is
// gone from the screen.
func (k *keystrokes) clear() {
	ctx, cancel := context.WithTimeout(context.Background(), uiBenchWait)
	defer cancel()
	gone := k.typed[:2]
	if _, err := k.tm.WriteString(strings.Repeat("\x7f", len(k.typed))); err != nil {
		k.b.Fatal(err)
	}
	if _, err := k.tm.WaitScreen(ctx, func(s ptytest.Screen) bool { return !s.Contains(gone) }); err != nil {
		k.b.Fatalf("the compose box was not cleared: %v; screen:\n%s", err, k.tm.ScreenText())
	}
	k.typed = ""
}

// sendEvery sends a numbered message to handle at every tick until ctx
// ends, counting those sent; a send slower than the period skips ticks.
func sendEvery(ctx context.Context, c *chat.Client, handle string, period time.Duration, sent *atomic.Int64) error {
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		_, err := c.Send(ctx, handle, "traffic "+strconv.FormatInt(sent.Load()+1, 10))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		sent.Add(1)
	}
}

// openChat opens u's chat client, logged in to the stack's NATS.
func openChat(tb testing.TB, ctx context.Context, st *stacktest.Stack, u *stacktest.User) *chat.Client {
	tb.Helper()
	id, err := kez.LoadIdentity(u.Home, nil)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := chat.Open(ctx, chat.Config{Client: client.Config{
		Identity: id, Home: u.Home, NATSURL: st.NATSURL, ServerURL: st.ServerURL,
	}})
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// uiEnv is a clean environment for the binary: PATH, a private HOME, an
// xterm, and vars.
func uiEnv(tb testing.TB, vars map[string]string) []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + tb.TempDir(), "TERM=xterm-256color"}
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	return env
}

// startPtyUI runs "kez ui" in an 80×24 pseudo-terminal with a screen model;
// the UI is killed at the end of the benchmark if it still runs.
func startPtyUI(tb testing.TB, bin string, env []string) *ptytest.Term {
	tb.Helper()
	cmd := exec.Command(bin, "ui")
	cmd.Env = env
	tm, err := ptytest.Start(cmd, ptytest.Options{Rows: 24, Cols: 80, Screen: true})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { tm.Close() })
	return tm
}

// quitPtyUI types key and waits for the UI to exit with status 0, the
// alternate screen left.
func quitPtyUI(tb testing.TB, ctx context.Context, tm *ptytest.Term, key string) {
	tb.Helper()
	tm.WriteString(key)
	if err := tm.Wait(ctx); err != nil {
		tb.Fatalf("kez ui did not exit cleanly on %q: %v; screen:\n%s", key, err, tm.ScreenText())
	}
	if _, err := tm.WaitScreen(ctx, func(s ptytest.Screen) bool { return !s.AltScreen() }); err != nil {
		tb.Fatalf("kez ui left the alternate screen on: %v", err)
	}
	tm.Close()
}

// vmHWM returns the peak resident set size of process pid, in MiB.
func vmHWM(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			if err != nil {
				return 0, fmt.Errorf("VmHWM of %d: %w", pid, err)
			}
			return kb / 1024, nil
		}
	}
	return 0, errors.New("no VmHWM in /proc/PID/status")
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// percentile returns the p-th percentile of sorted (nearest rank).
func percentile(sorted []time.Duration, p int) time.Duration {
	i := (len(sorted)*p + 99) / 100
	return sorted[max(i-1, 0)]
}
