package systemtest

// Strangers (issue 13, findings 4, 5 and 6), performed against a process
// stack: registered users who are not the victim's contacts write to her
// and point their handles where they like. The victim's client is the
// chat library, as an app embeds it.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/chat"
	kezclient "github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// procStranger is a user registered on the process stack who writes by
// publishing sealed envelopes itself, as an attacker would.
type procStranger struct {
	u  *user
	js jetstream.JetStream
}

// stranger registers name; if claim is not "", its chain then claims that
// handle (a set_handle link, which the registry never sees).
func (st *procStack) stranger(t *testing.T, name, claim string) *procStranger {
	t.Helper()
	u := st.register(t, name)
	ctx := testCtx(t, 30*time.Second)
	if claim != "" {
		sc := &sigchain.Client{BaseURL: st.SigURL}
		chain, err := sc.FetchVerified(ctx, u.key, nil)
		if err != nil {
			t.Fatal(err)
		}
		l, err := sigchain.NewLink(u.id, chain, sigchain.TypeSetHandle, sigchain.SetHandleBody(claim), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if err := sc.Append(ctx, l); err != nil {
			t.Fatalf("%s claims %s in its chain: %v", name, claim, err)
		}
	}
	nc, err := chat.Connect(ctx, st.NATSURL, u.id)
	if err != nil {
		t.Fatalf("%s logs in: %v", name, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return &procStranger{u: u, js: js}
}

// send seals body to `to` and publishes it; it returns the stream's error.
func (s *procStranger) send(t *testing.T, to *user, body []byte) error {
	t.Helper()
	m := chat.Message{ID: chat.NewMessageID(), Kind: chat.KindText, Body: body}
	env, err := chat.Seal(s.u.id, chat.Recipient{Key: to.key, EncryptionKey: to.id.EncryptionKey(0).PublicKey()}, m)
	if err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg("kez.v1.send." + to.key.String() + "." + s.u.key.String())
	msg.Data = env
	msg.Header.Set(jetstream.MsgIDHeader, m.ID.String())
	_, err = s.js.PublishMsg(testCtx(t, 30*time.Second), msg)
	return err
}

func (s *procStranger) mustSend(t *testing.T, to *user, body []byte) {
	t.Helper()
	if err := s.send(t, to, body); err != nil {
		t.Fatalf("%s publishes to %s: %v", s.u.name, to.name, err)
	}
}

// victim opens a chat client for u on the process stack in home (a fresh
// one if ""); the handles strangers claim at development domains parse.
func (st *procStack) victim(t *testing.T, u *user, home string, change func(*chat.Config)) (*chat.Client, *logBuffer) {
	t.Helper()
	if home == "" {
		home = filepath.Join(t.TempDir(), u.name)
	}
	logs := &logBuffer{}
	cfg := chat.Config{Client: kezclient.Config{
		Identity: u.id, Home: home,
		NATSURL: st.NATSURL, ServerURL: st.ChatURL, SigServerURL: st.SigURL, Domain: st.Domain,
		AllowLocalDomains: true,
		Logger:            slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		NATSOptions:       []nats.Option{nats.ReconnectWait(20 * time.Millisecond)},
	}}
	if change != nil {
		change(&cfg)
	}
	c, err := chat.Open(testCtx(t, 30*time.Second), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		if t.Failed() {
			t.Logf("%s's client log (tail):\n%s", u.name, tail(logs.String(), 6000))
		}
	})
	return c, logs
}

// handled counts the deliveries a client dealt with.
func handled(c *chat.Client) uint64 {
	s := c.Stats()
	return s.Received + s.RequestsDropped + s.Duplicates + s.Rejected
}

// syncUntil syncs c until it handled n deliveries in all.
func syncUntil(t *testing.T, c *chat.Client, n uint64) {
	t.Helper()
	ctx := testCtx(t, time.Minute)
	eventually(t, time.Minute, fmt.Sprintf("%d deliveries handled", n), func() bool {
		if _, err := c.Sync(ctx); err != nil {
			t.Fatalf("sync: %v", err)
		}
		return handled(c) >= n
	})
}

// TestHostileStrangerOnLoopback (finding 4): strangers claim handles whose
// domains are this machine, one by IP and one by a name that resolves to
// loopback (checked when dialed, as for DNS rebinding). The victim's
// client does not contact either: no connection reaches the listeners,
// the lookups fail, the requests show no handle. Positive control first:
// a client that marks those domains local does reach them.
func TestHostileStrangerOnLoopback(t *testing.T) {
	st := startProcStack(t, procOptions{NoHTTPLimits: true})
	alice := st.register(t, "alice")
	byIP, byName := stacktest.StartTarpit(t), stacktest.StartTarpit(t)
	ipDomain, nameDomain := byIP.Addr(), "localhost:"+byName.Port()
	mallory := st.stranger(t, "mallory", "mallory@"+ipDomain)
	trudy := st.stranger(t, "trudy", "trudy@"+nameDomain)

	control, _ := st.victim(t, alice, "", func(c *chat.Config) {
		c.Client.LocalDomains = []string{ipDomain, nameDomain}
		c.RefreshTimeout = 300 * time.Millisecond
	})
	mallory.mustSend(t, alice, []byte("click here"))
	trudy.mustSend(t, alice, []byte("click here"))
	syncUntil(t, control, 2)
	if err := control.ResolveRequests(testCtx(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	if byIP.Accepted() == 0 || byName.Accepted() == 0 {
		t.Fatalf("positive control: the marked client did not reach the listeners (%d, %d connections)", byIP.Accepted(), byName.Accepted())
	}
	control.Close()
	before := byIP.Accepted() + byName.Accepted()

	victim, logs := st.victim(t, alice, "", nil)
	mallory.mustSend(t, alice, []byte("click here, again"))
	trudy.mustSend(t, alice, []byte("click here, again"))
	syncUntil(t, victim, 2)
	if err := victim.ResolveRequests(testCtx(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	if n := byIP.Accepted() + byName.Accepted(); n != before {
		t.Errorf("%d connections reached the strangers' loopback listeners", n-before)
	}
	if s := victim.Stats(); s.StrangerLookups != 2 || s.StrangerLookupsFailed != 2 || s.Requests != 2 {
		t.Errorf("stats: %+v; want 2 requests, 2 lookups, both failed", s)
	}
	reqs, err := victim.Requests(testCtx(t, 10*time.Second))
	if err != nil || len(reqs) != 2 {
		t.Fatalf("requests: %d, %v", len(reqs), err)
	}
	for _, r := range reqs {
		if r.PeerHandle != "" {
			t.Errorf("a request shows the unconfirmed handle %q", r.PeerHandle)
		}
	}
	if !strings.Contains(logs.String(), "not a public address") {
		t.Error("the refusal is not in the client's log")
	}
}

// TestHostileTarpitStrangers (finding 5): 50 strangers claim handles at 50
// listeners that accept and never answer (marked local, so the lookups do
// reach them and hang), and write to alice. Then bob, her contact, writes:
// his message reaches her handler within 1 s.
func TestHostileTarpitStrangers(t *testing.T) {
	const n = 50
	st := startProcStack(t, procOptions{NoHTTPLimits: true})
	alice, bob := st.register(t, "alice"), st.register(t, "bob")
	var tarpits []*stacktest.Tarpit
	var domains []string
	for range n {
		tp := stacktest.StartTarpit(t)
		tarpits, domains = append(tarpits, tp), append(domains, tp.Addr())
	}
	ac, _ := st.victim(t, alice, "", func(c *chat.Config) {
		c.Client.LocalDomains = domains
		c.RefreshTimeout = time.Minute // each lookup hangs for the whole test
	})
	bc, _ := st.victim(t, bob, "", nil)
	ctx := testCtx(t, 2*time.Minute)
	if _, err := ac.AddContact(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := bc.AddContact(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	var strangers []*procStranger
	for i := range n {
		strangers = append(strangers, st.stranger(t, fmt.Sprintf("stranger%02d", i), "mallory@"+domains[i]))
	}

	got := make(chan *chat.Entry, 4*n)
	runCtx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- ac.Run(runCtx, func(e *chat.Entry) { got <- e }) }()
	t.Cleanup(func() { cancel(); <-runDone })
	next := func() *chat.Entry {
		t.Helper()
		select {
		case e := <-got:
			return e
		case <-time.After(30 * time.Second):
			t.Fatal("alice's handler got nothing within 30 s")
			return nil
		}
	}

	for _, s := range strangers {
		s.mustSend(t, alice, []byte("you won a prize"))
	}
	for range n {
		if e := next(); e.Trust != chat.TrustRequest {
			t.Fatalf("a stranger's message came as %s", e.Trust)
		}
	}
	// The attack is live: the lookups that may run hang in the tarpits.
	accepted := func() int {
		total := 0
		for _, tp := range tarpits {
			total += tp.Accepted()
		}
		return total
	}
	eventually(t, 30*time.Second, "lookups hanging in the tarpits", func() bool { return accepted() >= chat.DefaultStrangerLookups })

	sent := time.Now()
	if _, err := bc.Send(ctx, "alice", "lunch?"); err != nil {
		t.Fatal(err)
	}
	e := next()
	latency := time.Since(sent)
	if e.From != bob.key || e.Trust != chat.TrustTrusted || e.Text() != "lunch?" {
		t.Fatalf("alice got %q from %s (%s), want bob's message", e.Text(), e.From, e.Trust)
	}
	t.Logf("bob's message reached alice's handler %s after he sent it, %d lookups hanging in tarpits", latency.Round(time.Millisecond), accepted())
	if latency > time.Second {
		t.Errorf("bob's message took %s, want under 1 s", latency)
	}
	if a := accepted(); a > chat.DefaultStrangerLookups {
		t.Errorf("%d lookups ran at once, want at most %d", a, chat.DefaultStrangerLookups)
	}
}

// TestHostileRequestFlood (finding 6): one stranger sends 100 requests of
// 48 KiB (4.8 MiB) to alice. Her client keeps what fits under the default
// per-sender cap (1 MiB: 21 of them), drops the rest unwritten, and
// chat.db grows by little more than the cap.
func TestHostileRequestFlood(t *testing.T) {
	const size, count = 48 << 10, 100
	st := startProcStack(t, procOptions{NoHTTPLimits: true})
	alice := st.register(t, "alice")
	home := filepath.Join(t.TempDir(), "alice")
	ac, logs := st.victim(t, alice, home, nil)
	base := fileSizes(t, home, chat.DBFileName, chat.DBFileName+"-wal")
	flooder := st.stranger(t, "flooder", "")
	acked := 0
	for range count {
		if err := flooder.send(t, alice, make([]byte, size)); err != nil {
			t.Logf("the stream refused a request after %d: %v", acked, err)
			break
		}
		acked++
	}
	keep := chat.DefaultMaxRequestBytesPerSender / size
	if acked <= keep {
		t.Fatalf("only %d requests reached alice's inbox, not more than the cap of %d: the test shows nothing", acked, keep)
	}
	syncUntil(t, ac, uint64(acked))
	if s := ac.Stats(); s.Requests != uint64(keep) || s.RequestsDropped != uint64(acked-keep) {
		t.Errorf("stored %d, dropped %d; want %d and %d", s.Requests, s.RequestsDropped, keep, acked-keep)
	}
	if !strings.Contains(logs.String(), "dropped a message request over the cap") {
		t.Error("the drops are not in the client's debug log")
	}
	ac.Close()
	grown := fileSizes(t, home, chat.DBFileName, chat.DBFileName+"-wal") - base
	t.Logf("chat.db grew by %d bytes for %d bytes of requests the stream accepted", grown, acked*size)
	if limit := int64(chat.DefaultMaxRequestBytesPerSender + 256<<10); grown > limit {
		t.Errorf("chat.db grew by %d bytes, over %d", grown, limit)
	}
}

// fileSizes adds up the sizes of the named files in dir (missing ones
// count 0).
func fileSizes(t *testing.T, dir string, names ...string) int64 {
	t.Helper()
	var n int64
	for _, name := range names {
		fi, err := os.Stat(filepath.Join(dir, name))
		switch {
		case err == nil:
			n += fi.Size()
		case !errors.Is(err, os.ErrNotExist):
			t.Fatal(err)
		}
	}
	return n
}
