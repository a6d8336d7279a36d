package chat

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// waitAccepts waits until n more connections were accepted by the
// tarpits (fails after d).
func waitAccepts(t testing.TB, tps []*stacktest.Tarpit, n int, d time.Duration) {
	t.Helper()
	cases := make(chan struct{}, n)
	stop := make(chan struct{})
	defer close(stop)
	for _, tp := range tps {
		go func() {
			for {
				select {
				case <-tp.Accepts():
					select {
					case cases <- struct{}{}:
					case <-stop:
						return
					}
				case <-stop:
					return
				}
			}
		}()
	}
	timeout := time.After(d)
	for range n {
		select {
		case <-cases:
		case <-timeout:
			t.Fatalf("fewer than %d connections reached the tarpits within %s", n, d)
		}
	}
}

func accepted(tps ...*stacktest.Tarpit) int {
	n := 0
	for _, tp := range tps {
		n += tp.Accepted()
	}
	return n
}

// strangerUser is a registered user who writes to others by publishing
// sealed envelopes itself: no client, no database, as an attacker would.
type strangerUser struct {
	u    *stacktest.User
	js   jetstream.JetStream
	sent map[MessageID][]byte // the envelopes it sent
}

// newStrangerUser registers name on st. If claim is not "", its chain
// then claims that handle instead: a set_handle link the registry, which
// checked the chain when the name was claimed, never sees.
func newStrangerUser(t testing.TB, st *stacktest.Stack, name, claim string) *strangerUser {
	t.Helper()
	return strangerAs(t, st, st.NewUser(t, name), claim)
}

// strangerAs is newStrangerUser for a user already registered.
func strangerAs(t testing.TB, st *stacktest.Stack, u *stacktest.User, claim string) *strangerUser {
	t.Helper()
	name := u.Name
	ctx := testCtx(t)
	if claim != "" {
		l, err := sigchain.NewLink(u.Identity, u.Chain, sigchain.TypeSetHandle, sigchain.SetHandleBody(claim), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if err := (&sigchain.Client{BaseURL: st.SigServerURL}).Append(ctx, l); err != nil {
			t.Fatalf("%s claims %s in its chain: %v", name, claim, err)
		}
	}
	nc, err := Connect(ctx, st.NATSURL, u.Identity)
	if err != nil {
		t.Fatalf("%s logs in: %v", name, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return &strangerUser{u: u, js: js, sent: map[MessageID][]byte{}}
}

// send seals body to `to` and publishes it; it returns the message ID.
func (s *strangerUser) send(t testing.TB, to *stacktest.User, body []byte) MessageID {
	t.Helper()
	m := Message{ID: NewMessageID(), Kind: KindText, Body: body}
	env, err := Seal(s.u.Identity, Recipient{Key: to.Key, EncryptionKey: to.Identity.EncryptionKey(0).PublicKey()}, m)
	if err != nil {
		t.Fatal(err)
	}
	s.sent[m.ID] = env
	s.publish(t, to, m.ID, env)
	return m.ID
}

func (s *strangerUser) publish(t testing.TB, to *stacktest.User, id MessageID, env []byte) {
	t.Helper()
	msg := nats.NewMsg(sendSubject(to.Key, s.u.Key))
	msg.Data = env
	msg.Header.Set(jetstream.MsgIDHeader, id.String()+"-"+NewMessageID().String())
	if _, err := s.js.PublishMsg(testCtx(t), msg); err != nil {
		t.Fatalf("%s publishes: %v", s.u.Name, err)
	}
}

// processed counts the deliveries c handled: stored, dropped over a cap,
// duplicates and rejected.
func processed(c *testClient) uint64 {
	s := c.Stats()
	return s.Received + s.RequestsDropped + s.Duplicates + s.Rejected
}

// receiveProcessed receives until c handled n more deliveries than
// before.
func receiveProcessed(t testing.TB, c *testClient, before uint64, n int) {
	t.Helper()
	receiveUntil(t, c, fmt.Sprintf("%d deliveries", n), func(int) bool { return processed(c)-before >= uint64(n) })
}

// runClient receives with c.Run until the test ends; new entries go to
// the returned channel.
func runClient(t testing.TB, c *testClient) <-chan *Entry {
	t.Helper()
	got := make(chan *Entry, 4096)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, func(e *Entry) { got <- e }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return got
}

// next returns the next entry Run handed over, failing after d.
func next(t testing.TB, got <-chan *Entry, d time.Duration) *Entry {
	t.Helper()
	select {
	case e := <-got:
		return e
	case <-time.After(d):
		t.Fatalf("no message within %s", d)
		return nil
	}
}

// Finding 5 of issue 13: each new stranger cost up to 5 s under the
// receive lock, so strangers whose handles point at servers that never
// answer delayed a contact's message by their number times that. Here 50
// strangers claim handles at 50 tarpits (marked local, so the lookups do
// reach them and hang) and write to alice; then her contact bob writes.
func TestTarpitStrangersDoNotDelayContacts(t *testing.T) {
	const n = 50
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	tarpits := make([]*stacktest.Tarpit, n)
	var domains []string
	for i := range tarpits {
		tarpits[i] = stacktest.StartTarpit(t)
		domains = append(domains, tarpits[i].Addr())
	}
	alice := openClient(t, st, au, func(c *Config) {
		c.Client.AllowLocalDomains, c.Client.LocalDomains = true, domains
		c.RefreshTimeout = time.Minute // a lookup hangs as long as the test
	})
	bob := openClient(t, st, bu)
	mustAdd(t, alice, "bob")
	mustAdd(t, bob, "alice")
	strangers := make([]*strangerUser, n)
	for i := range strangers {
		strangers[i] = newStrangerUser(t, st, fmt.Sprintf("stranger%02d", i), "mallory@"+domains[i])
	}
	got := runClient(t, alice)

	for _, s := range strangers {
		s.send(t, au, []byte("you won a prize"))
	}
	// Every request is stored and handed over at once, without a handle:
	// none is lost or waits for its lookup.
	for range n {
		if e := next(t, got, 20*time.Second); e.Trust != TrustRequest || e.PeerHandle != "" {
			t.Fatalf("a stranger's message: %s %q", e.Trust, e.PeerHandle)
		}
	}
	// The attack is live: lookups hang in the tarpits, as many as may run.
	waitAccepts(t, tarpits, DefaultStrangerLookups, 20*time.Second)

	sent := time.Now()
	mustSend(t, bob, "alice", "are you there?")
	e := next(t, got, 10*time.Second)
	latency := time.Since(sent)
	if e.From != bu.Key || e.Trust != TrustTrusted || e.Text() != "are you there?" {
		t.Fatalf("alice got %q from %s (%s), want bob's message", e.Text(), e.From, e.Trust)
	}
	t.Logf("bob's message reached alice %s after he sent it, with %d lookups hanging", latency.Round(time.Millisecond), accepted(tarpits...))
	if latency > time.Second {
		t.Errorf("bob's message took %s, want under 1 s", latency)
	}
	if a := accepted(tarpits...); a != DefaultStrangerLookups {
		t.Errorf("%d lookups reached the tarpits, want at most %d at once", a, DefaultStrangerLookups)
	}
	if reqs, err := alice.Requests(testCtx(t)); err != nil || len(reqs) != n {
		t.Errorf("requests: %d, %v", len(reqs), err)
	}
}

// The lookup queue is bounded: with StrangerLookups and StrangerQueue
// taken by hanging lookups, further strangers are skipped (and counted),
// not queued without end; their messages are stored all the same.
func TestStrangerLookupsAreBounded(t *testing.T) {
	const n, lookups, queue = 8, 1, 2
	st := stacktest.Start(t, stacktest.Options{})
	au := st.NewUser(t, "alice")
	var tarpits []*stacktest.Tarpit
	var domains []string
	for range n {
		tp := stacktest.StartTarpit(t)
		tarpits, domains = append(tarpits, tp), append(domains, tp.Addr())
	}
	alice := openClient(t, st, au, func(c *Config) {
		c.Client.AllowLocalDomains, c.Client.LocalDomains = true, domains
		c.RefreshTimeout, c.StrangerLookups, c.StrangerQueue = time.Minute, lookups, queue
	})
	for i := range n {
		newStrangerUser(t, st, fmt.Sprintf("stranger%02d", i), "mallory@"+domains[i]).send(t, au, []byte("hello"))
	}
	receiveN(t, alice, n)
	waitAccepts(t, tarpits, lookups, 20*time.Second)
	s := alice.Stats()
	if s.Requests != n {
		t.Errorf("%d requests stored, want %d", s.Requests, n)
	}
	if s.StrangerLookupsSkipped < n-lookups-queue {
		t.Errorf("%d lookups skipped, want at least %d", s.StrangerLookupsSkipped, n-lookups-queue)
	}
	if a := accepted(tarpits...); a != lookups {
		t.Errorf("%d lookups reached the tarpits, want %d", a, lookups)
	}
}

// Finding 4 of issue 13: a stranger's handle made the client contact
// whatever the stranger chose, on this machine included. A stranger
// whose handle's domain is on loopback (by an IP, or by a name that
// resolves there) is not contacted unless the domain is marked local; the
// failed lookup is remembered, so more messages do not ask again until
// StrangerRetry has passed.
func TestStrangerOnLoopbackIsNotContacted(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au := st.NewUser(t, "alice")
	byIP, byName := stacktest.StartTarpit(t), stacktest.StartTarpit(t)
	ipStranger := newStrangerUser(t, st, "mallory", "mallory@"+byIP.Addr())
	nameStranger := newStrangerUser(t, st, "trudy", "trudy@localhost:"+byName.Port())

	// Positive control: a client that marks the domains local does reach
	// them, so the refusals below are the rules' doing.
	home := filepath.Join(t.TempDir(), "alice")
	control := openClientIn(t, st, au, home, func(c *Config) {
		c.Client.AllowLocalDomains, c.Client.LocalDomains = true, []string{byIP.Addr(), "localhost:" + byName.Port()}
		c.RefreshTimeout = 200 * time.Millisecond
	})
	ipStranger.send(t, au, []byte("one"))
	nameStranger.send(t, au, []byte("one"))
	receiveN(t, control, 2)
	if err := control.ResolveRequests(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if byIP.Accepted() == 0 || byName.Accepted() == 0 {
		t.Fatalf("the control lookups did not reach the servers: %d, %d connections", byIP.Accepted(), byName.Accepted())
	}
	control.Close()
	before := accepted(byIP, byName)

	var now atomic.Int64
	now.Store(time.Now().UnixMilli())
	alice := openClientIn(t, st, au, home, func(c *Config) {
		c.Client.AllowLocalDomains = true // the handles parse; their domains are not marked local
		c.Client.Clock = func() time.Time { return time.UnixMilli(now.Load()) }
	})
	ctx := testCtx(t)
	// The two requests the control client stored are looked up again.
	if err := alice.ResolveRequests(ctx); err != nil {
		t.Fatal(err)
	}
	if s := alice.Stats(); s.StrangerLookups != 2 || s.StrangerLookupsFailed != 2 {
		t.Errorf("lookups %d, failed %d; want 2 and 2", s.StrangerLookups, s.StrangerLookupsFailed)
	}
	// More messages: the failures are remembered.
	for range 3 {
		ipStranger.send(t, au, []byte("again"))
		nameStranger.send(t, au, []byte("again"))
	}
	receiveN(t, alice, 6)
	if err := alice.ResolveRequests(ctx); err != nil {
		t.Fatal(err)
	}
	if s := alice.Stats(); s.StrangerLookups != 2 {
		t.Errorf("%d lookups after more messages, want the 2 remembered", s.StrangerLookups)
	}
	// After StrangerRetry they are looked up again, and refused again.
	now.Add((DefaultStrangerRetry + time.Second).Milliseconds())
	if err := alice.ResolveRequests(ctx); err != nil {
		t.Fatal(err)
	}
	if s := alice.Stats(); s.StrangerLookups != 4 || s.StrangerLookupsFailed != 4 {
		t.Errorf("after the retry time: lookups %d, failed %d; want 4 and 4", s.StrangerLookups, s.StrangerLookupsFailed)
	}
	if a := accepted(byIP, byName); a != before {
		t.Errorf("%d connections reached the stranger's loopback servers", a-before)
	}
	reqs, err := alice.Requests(ctx)
	if err != nil || len(reqs) != 8 {
		t.Fatalf("requests: %d, %v", len(reqs), err)
	}
	for _, r := range reqs {
		if r.PeerHandle != "" {
			t.Errorf("a request shows the unconfirmed handle %q", r.PeerHandle)
		}
	}
	if !strings.Contains(alice.log.String(), "not public") {
		t.Errorf("the refusal is not in the log:\n%s", alice.log.String())
	}
}

// Finding 6 of issue 13: message requests had no cap. They are capped per
// sender and in all, by count and by bytes; what is over a cap is
// dropped, counted, logged, never written, and not delivered again. A
// contact's messages are not capped.
func TestRequestCaps(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	alice := openClient(t, st, au, func(c *Config) {
		c.MaxRequestsPerSender, c.MaxRequestBytesPerSender = 5, 4096
		c.MaxRequests, c.MaxRequestBytes = 9, 6000
	})
	bob := openClient(t, st, bu)
	mustAdd(t, alice, "bob")
	mustAdd(t, bob, "alice")
	ctx := testCtx(t)
	a := newStrangerUser(t, st, "stranger-a", "")
	b := newStrangerUser(t, st, "stranger-b", "")
	c := newStrangerUser(t, st, "stranger-c", "")
	d := newStrangerUser(t, st, "stranger-d", "")
	var dropped, stored []MessageID
	sendAll := func(s *strangerUser, size, count, keep int) {
		t.Helper()
		var ids []MessageID
		before := processed(alice)
		for range count {
			ids = append(ids, s.send(t, au, []byte(strings.Repeat("x", size))))
		}
		receiveProcessed(t, alice, before, count)
		for i, id := range ids {
			_, err := alice.Message(ctx, s.u.Key, id)
			switch {
			case i < keep && err != nil:
				t.Errorf("%s's message %d of %d was not stored: %v", s.u.Name, i+1, count, err)
			case i >= keep && !errors.Is(err, ErrNoMessage):
				t.Errorf("%s's message %d of %d was stored over the cap: %v", s.u.Name, i+1, count, err)
			case i >= keep:
				dropped = append(dropped, id)
			default:
				stored = append(stored, id)
			}
		}
		if got := alice.Stats().RequestsDropped; got != uint64(len(dropped)) {
			t.Errorf("after %s: %d dropped, want %d", s.u.Name, got, len(dropped))
		}
	}
	// Positive control: under the caps, everything is stored.
	sendAll(a, 10, 5, 5)
	// Per sender, by count: 5.
	sendAll(a, 10, 3, 0)
	// A stored request delivered again at the cap is a duplicate, not a
	// drop.
	dups, before := alice.Stats().Duplicates, processed(alice)
	a.publish(t, au, stored[0], a.sent[stored[0]])
	receiveProcessed(t, alice, before, 1)
	if s := alice.Stats(); s.Duplicates != dups+1 || s.RequestsDropped != uint64(len(dropped)) {
		t.Errorf("a request delivered again: %d duplicates, %d dropped", s.Duplicates-dups, s.RequestsDropped)
	}
	// Per sender, by bytes: 4096.
	sendAll(b, 2000, 3, 2)
	// In all, by count: 9 (a 5, b 2, c 2).
	sendAll(c, 10, 3, 2)
	// Deleting requests makes room again.
	if n, err := alice.DeleteRequests(ctx, a.u.Key); err != nil || n != 5 {
		t.Fatalf("deleting a's requests: %d, %v", n, err)
	}
	// In all, by bytes: 6000 (b 4000, c 20, then d 1500 fits, 1500 more not).
	sendAll(d, 1500, 2, 1)

	// Nothing dropped comes back: it was terminated, not left unacknowledged.
	if n := mustSync(t, alice); n != 0 {
		t.Errorf("%d messages came back", n)
	}
	if got := alice.Stats().RequestsDropped; got != uint64(len(dropped)) {
		t.Errorf("%d dropped in all, want %d", got, len(dropped))
	}
	if !strings.Contains(alice.log.String(), "dropped a message request over the cap") {
		t.Error("no drop was logged")
	}
	// A contact is not capped.
	for i := range 12 {
		mustSend(t, bob, "alice", fmt.Sprintf("message %d", i))
	}
	receiveN(t, alice, 12)
	if in := mustInbox(t, alice, false); len(in) != 12 {
		t.Errorf("bob's messages in the inbox: %d, want 12", len(in))
	}
}

// The flood of finding 6 (there 2,000 x 48 KiB grew chat.db to 100 MB),
// scaled down: one stranger sends 60 x 48 KiB; the default per-sender cap
// of 1 MiB keeps 21 of them and chat.db stays small.
func TestRequestFloodKeepsDatabaseSmall(t *testing.T) {
	const size, count = 48 << 10, 60
	st := stacktest.Start(t, stacktest.Options{})
	au := st.NewUser(t, "alice")
	home := filepath.Join(t.TempDir(), "alice")
	alice := openClientIn(t, st, au, home)
	base := dbSize(t, home)
	s := newStrangerUser(t, st, "flooder", "")
	for range count {
		s.send(t, au, make([]byte, size))
	}
	receiveProcessed(t, alice, 0, count)
	keep := DefaultMaxRequestBytesPerSender / size
	if s := alice.Stats(); s.Requests != uint64(keep) || s.RequestsDropped != uint64(count-keep) {
		t.Errorf("stored %d, dropped %d; want %d and %d", s.Requests, s.RequestsDropped, keep, count-keep)
	}
	alice.Close()
	grown := dbSize(t, home) - base
	t.Logf("chat.db grew by %d bytes for %d bytes sent", grown, count*size)
	if limit := int64(DefaultMaxRequestBytesPerSender + 256<<10); grown > limit {
		t.Errorf("chat.db grew by %d bytes, over %d", grown, limit)
	}
}

// dbSize is the size of chat.db and its WAL in home.
func dbSize(t testing.TB, home string) int64 {
	t.Helper()
	var n int64
	for _, name := range []string{DBFileName, DBFileName + "-wal"} {
		fi, err := os.Stat(filepath.Join(home, name))
		if err == nil {
			n += fi.Size()
		} else if !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
	return n
}

// The registry checks a chain only when a name is claimed; a key may
// later set any handle in its chain. That never makes a request show a
// handle the registry does not give to the sender: here mallory's chain
// claims bob, alice's contact, and her request shows no handle and bob
// is not flagged. The positive control is a real key change: bob's name
// released and claimed by another key, whose request flags bob and is
// held once looked up.
func TestLookupConfirmsHandlesBothWays(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	alice := openClient(t, st, au, checkEveryTime) // no answer is reused
	mustAdd(t, alice, "bob")
	ctx := testCtx(t)

	mallory := newStrangerUser(t, st, "mallory", bu.Handle.String())
	mallory.send(t, au, []byte("it is me, bob"))
	receiveN(t, alice, 1)
	if err := alice.ResolveRequests(ctx); err != nil {
		t.Fatal(err)
	}
	reqs, err := alice.Requests(ctx)
	if err != nil || len(reqs) != 1 || reqs[0].PeerHandle != "" || reqs[0].From != mallory.u.Key {
		t.Fatalf("mallory's request: %+v, %v", reqs, err)
	}
	if ct, _ := alice.Contact(ctx, "bob"); ct.Flag != FlagNone {
		t.Fatalf("bob was flagged by mallory's claim: %+v", ct)
	}

	st.ReleaseHandle(t, "bob")
	id := stacktest.Identity("not-bob")
	registerAs(t, st, id, bu.Handle)
	imposter := strangerAs(t, st, &stacktest.User{Name: "not-bob", Identity: id, Key: id.PublicKey(), Handle: bu.Handle}, "")
	imposter.send(t, au, []byte("it is me, bob, new phone"))
	receiveN(t, alice, 1)
	if err := alice.ResolveRequests(ctx); err != nil {
		t.Fatal(err)
	}
	held, err := alice.Held(ctx)
	if err != nil || len(held) != 1 || held[0].From != id.PublicKey() || held[0].PeerHandle != bu.Handle.String() {
		t.Fatalf("held: %+v, %v", held, err)
	}
	if ct, _ := alice.Contact(ctx, "bob"); ct.Flag != FlagKeyChanged || ct.FlagKey != id.PublicKey() {
		t.Errorf("bob after another key claimed his name: %+v", ct)
	}
	if reqs, _ := alice.Requests(ctx); len(reqs) != 1 {
		t.Errorf("requests: %d, want mallory's alone", len(reqs))
	}
}
