package signal_test

import (
	"context"
	"crypto/rand"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/files/internal/signal"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/kez"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/nats-io/nats.go"
)

// The cookie tests run the owner on a clock that stands still (only the
// test moves it), so that its token buckets never refill and the counts
// are exact whatever the machine's speed.

type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock() *testClock { return &testClock{t: time.Now()} }

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// randomKey is a made-up requester key.
func randomKey(t testing.TB) (k kez.PublicKey) {
	rand.Read(k[:])
	return k
}

func inbox(k kez.PublicKey, s string) string { return wire.ReplyInbox(k.String()) + "." + s }

// serveCookied starts alice answering locates with the budget b on clock,
// and returns her counters.
func serveCookied(t *testing.T, st *stacktest.Stack, alice *stacktest.User, b signal.AnswerBudget, clock *testClock) *signal.AnswerCounters {
	t.Helper()
	anc := login(t, st, alice)
	var c signal.AnswerCounters
	listen := addrs(t, "/ip4/127.0.0.1/tcp/4001")
	sub, err := signal.AnswerLocates(anc, alice.Identity, func() []ma.Multiaddr { return listen }, signal.AnswerOptions{Budget: b, Counters: &c, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	if err := anc.Flush(); err != nil {
		t.Fatal(err)
	}
	return &c
}

// request returns the wire form of a locate request to owner from
// requester, made at now, with cookie (nil: none).
func request(t testing.TB, owner, requester kez.PublicKey, nonce [16]byte, now time.Time, cookie []byte) []byte {
	t.Helper()
	r := signal.LocateRequest{Owner: owner, Requester: requester, Nonce: nonce, Time: now, Cookie: cookie}
	b, err := r.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A flood of requests with made-up requester keys, from one connection at
// full speed, keeps alice's client busy, but bob's real locate still gets
// her signed answer: over the budget he gets a cookie, which the flooder's
// made-up keys never read, and his cookied request is answered within his
// own key's budget.
func TestCookieFloodWithMadeUpKeysDoesNotHideOwner(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice, bob, mallory := st.NewUser(t, "alice"), st.NewUser(t, "bob"), st.NewUser(t, "mallory")
	clock := newTestClock()
	const burst = 20
	c := serveCookied(t, st, alice, signal.AnswerBudget{Rate: 1, Burst: burst}, clock)
	mnc, bnc := login(t, st, mallory), login(t, st, bob)

	flood := func(n int) {
		for i := 0; i < n; i++ {
			fake := randomKey(t)
			var nonce [16]byte
			rand.Read(nonce[:])
			if err := mnc.PublishMsg(&nats.Msg{Subject: signal.SignalSubjectPrefix + alice.Key.String(), Reply: inbox(fake, "x"), Data: request(t, alice.Key, fake, nonce, clock.Now(), nil)}); err != nil {
				return // the connection closed at the end of the test
			}
		}
	}
	// The first burst+100 are in alice's queue before bob asks; the
	// flood goes on at full speed while he does.
	flood(burst + 100)
	if err := mnc.Flush(); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			flood(1000)
		}
	}()
	info, err := signal.Locate(context.Background(), bnc, bob.Key, alice.Key, signal.LocateOptions{Now: clock.Now, Timeout: 30 * time.Second})
	stop()
	<-done
	if err != nil {
		t.Fatalf("bob's locate under the flood: %v", err)
	}
	if len(info.Addrs) != 1 || info.Addrs[0].String() != "/ip4/127.0.0.1/tcp/4001" {
		t.Fatalf("bob got %v", info.Addrs)
	}
	s := c.Stats()
	// The budget's burst went to the first fake requests, bob's first
	// request got a cookie, his second was answered: burst + 1 answers.
	if s.Answered != burst+1 {
		t.Errorf("answered %d, want %d (%+v)", s.Answered, burst+1, s)
	}
	if s.Cookied < 100+1 {
		t.Errorf("cookied %d, want at least 101 (%+v)", s.Cookied, s)
	}
}

// cookieFor sends a locate request from u's connection as u and returns
// alice's cookie reply (her budget must be spent).
func cookieFor(t *testing.T, nc *nats.Conn, ch chan *nats.Msg, alice, u kez.PublicKey, nonce [16]byte, now time.Time) []byte {
	t.Helper()
	if err := nc.PublishMsg(&nats.Msg{Subject: signal.SignalSubjectPrefix + alice.String(), Reply: inbox(u, "c"), Data: request(t, alice, u, nonce, now, nil)}); err != nil {
		t.Fatal(err)
	}
	m := <-ch
	cr, err := signal.ParseCookieReply(m.Data)
	if err != nil {
		t.Fatalf("wanted a cookie reply: %v", err)
	}
	if cr.Owner != alice || cr.Requester != u || cr.Nonce != nonce || cr.Kind != 1 {
		t.Fatalf("cookie reply for another request: %+v", cr)
	}
	return cr.Cookie[:]
}

// Mallory floods with her real key and reads her cookies: at most her
// key's budget is answered, and bob, asking after her, is still answered.
func TestCookieRealKeyFlooderGetsItsKeyBudget(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice, bob, mallory := st.NewUser(t, "alice"), st.NewUser(t, "bob"), st.NewUser(t, "mallory")
	clock := newTestClock()
	const keyBurst = 4
	c := serveCookied(t, st, alice, signal.AnswerBudget{Rate: 1, Burst: 1, KeyRate: 1, KeyBurst: keyBurst}, clock)
	mnc, bnc := login(t, st, mallory), login(t, st, bob)
	ch := make(chan *nats.Msg, 256)
	if _, err := mnc.ChanSubscribe(inbox(mallory.Key, ">"), ch); err != nil {
		t.Fatal(err)
	}
	// Spend the budget, then take a cookie and use it 50 times.
	var nonce [16]byte
	if err := mnc.PublishMsg(&nats.Msg{Subject: signal.SignalSubjectPrefix + alice.Key.String(), Reply: inbox(mallory.Key, "a"), Data: request(t, alice.Key, mallory.Key, nonce, clock.Now(), nil)}); err != nil {
		t.Fatal(err)
	}
	<-ch
	rand.Read(nonce[:])
	cookie := cookieFor(t, mnc, ch, alice.Key, mallory.Key, nonce, clock.Now())
	const tries = 50
	for i := 0; i < tries; i++ {
		mnc.PublishMsg(&nats.Msg{Subject: signal.SignalSubjectPrefix + alice.Key.String(), Reply: inbox(mallory.Key, "c"), Data: request(t, alice.Key, mallory.Key, nonce, clock.Now(), cookie)})
	}
	if err := mnc.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := signal.Locate(context.Background(), bnc, bob.Key, alice.Key, signal.LocateOptions{Now: clock.Now}); err != nil {
		t.Fatalf("bob's locate after mallory's: %v", err)
	}
	s := c.Stats()
	if want := (signal.AnswerStats{Answered: 1 + keyBurst + 1, Cookied: 2, Dropped: tries - keyBurst}); s != want {
		t.Fatalf("counters %+v, want %+v", s, want)
	}
}

// A cookie that alice did not make, one she made for another requester or
// another request, or one older than two rotations, is refused; and a
// cookie reply never goes outside the inbox of the requester it names.
func TestCookieForgedStaleOrOthersRefused(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice, carol, mallory := st.NewUser(t, "alice"), st.NewUser(t, "carol"), st.NewUser(t, "mallory")
	clock := newTestClock()
	// A rate so low that the 4.5 minutes the clock moves below add no answer.
	c := serveCookied(t, st, alice, signal.AnswerBudget{Rate: 0.001, Burst: 1}, clock)
	mnc, cnc := login(t, st, mallory), login(t, st, carol)
	mch, cch := make(chan *nats.Msg, 64), make(chan *nats.Msg, 64)
	if _, err := mnc.ChanSubscribe(inbox(mallory.Key, ">"), mch); err != nil {
		t.Fatal(err)
	}
	if _, err := cnc.ChanSubscribe(inbox(carol.Key, ">"), cch); err != nil {
		t.Fatal(err)
	}
	subject := signal.SignalSubjectPrefix + alice.Key.String()
	send := func(nc *nats.Conn, reply string, data []byte) {
		t.Helper()
		if err := nc.PublishMsg(&nats.Msg{Subject: subject, Reply: reply, Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	// Spend the budget with a made-up key.
	fake := randomKey(t)
	send(mnc, inbox(fake, "x"), request(t, alice.Key, fake, [16]byte{}, clock.Now(), nil))

	// Requests naming mallory (or a made-up key) with carol's inbox as
	// reply subject: refused before any cookie is made.
	send(mnc, inbox(carol.Key, "p2p00"), request(t, alice.Key, mallory.Key, [16]byte{1}, clock.Now(), nil))
	send(mnc, inbox(carol.Key, "p2p01"), request(t, alice.Key, randomKey(t), [16]byte{2}, clock.Now(), nil))
	send(mnc, wire.ReplyInbox(carol.Key.String()), request(t, alice.Key, carol.Key, [16]byte{3}, clock.Now(), nil))
	if err := mnc.Flush(); err != nil {
		t.Fatal(err)
	}
	// Carol's own request, sent after: the first thing in her inbox must
	// be the cookie reply to it (alice answers in order).
	var cn [16]byte
	rand.Read(cn[:])
	carolCookie := cookieFor(t, cnc, cch, alice.Key, carol.Key, cn, clock.Now())

	var mn [16]byte
	rand.Read(mn[:])
	good := cookieFor(t, mnc, mch, alice.Key, mallory.Key, mn, clock.Now())
	forged := make([]byte, signal.CookieLen)
	rand.Read(forged)
	var otherNonce [16]byte
	rand.Read(otherNonce[:])
	before := c.Stats()
	send(mnc, inbox(mallory.Key, "f"), request(t, alice.Key, mallory.Key, mn, clock.Now(), forged))       // forged
	send(mnc, inbox(mallory.Key, "o"), request(t, alice.Key, mallory.Key, cn, clock.Now(), carolCookie))  // carol's, for her request
	send(mnc, inbox(mallory.Key, "n"), request(t, alice.Key, mallory.Key, otherNonce, clock.Now(), good)) // another request's
	if err := mnc.Flush(); err != nil {
		t.Fatal(err)
	}
	// Two rotations later, the request itself still fresh (4.5 min old).
	sent := clock.Now()
	clock.Add(4*time.Minute + 30*time.Second)
	send(mnc, inbox(mallory.Key, "s"), request(t, alice.Key, mallory.Key, mn, sent, good)) // stale
	if err := mnc.Flush(); err != nil {
		t.Fatal(err)
	}
	// A fresh cookie still works, and its answer is the first message
	// mallory gets after the refused ones: they got nothing.
	rand.Read(mn[:])
	fresh := cookieFor(t, mnc, mch, alice.Key, mallory.Key, mn, clock.Now())
	send(mnc, inbox(mallory.Key, "g"), request(t, alice.Key, mallory.Key, mn, clock.Now(), fresh))
	m := <-mch
	a, err := signal.ParseLocateAnswer(m.Data)
	if err != nil || a.Verify(alice.Key, mallory.Key, mn, clock.Now()) != nil {
		t.Fatalf("wanted alice's answer to the fresh cookie, got %x (%v)", m.Data, err)
	}
	if d := c.Stats().Dropped - before.Dropped; d != 4 {
		t.Errorf("dropped %d of the forged, other's, other request's and stale cookies, want 4", d)
	}
	if len(cch) != 0 {
		t.Errorf("carol's inbox got %d messages more", len(cch))
	}
}

// A holders request (kind 4) over the budget gets a cookie too, and
// AskHolders sends it again with the cookie and takes the answer.
func TestCookieHoldersRequest(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice, bob, carol, mallory := st.NewUser(t, "alice"), st.NewUser(t, "bob"), st.NewUser(t, "carol"), st.NewUser(t, "mallory")
	clock := newTestClock()
	blob := testCID(t, 0)
	have, err := signal.SignHave(carol.Identity, &signal.Have{Owner: alice.Key, Holder: carol.Key, Time: clock.Now(), CID: blob, Addrs: addrs(t, "/ip4/192.0.2.3/tcp/4001")})
	if err != nil {
		t.Fatal(err)
	}
	anc, bnc, mnc := login(t, st, alice), login(t, st, bob), login(t, st, mallory)
	var c signal.AnswerCounters
	sub, err := signal.AnswerLocates(anc, alice.Identity, func() []ma.Multiaddr { return addrs(t, "/ip4/127.0.0.1/tcp/1") }, signal.AnswerOptions{
		Budget: signal.AnswerBudget{Rate: 1, Burst: 1}, Counters: &c, Now: clock.Now,
		Holders: func(cid.Cid) [][]byte { return [][]byte{have} },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	if err := anc.Flush(); err != nil {
		t.Fatal(err)
	}
	fake := randomKey(t)
	if err := mnc.PublishMsg(&nats.Msg{Subject: signal.SignalSubjectPrefix + alice.Key.String(), Reply: inbox(fake, "x"), Data: request(t, alice.Key, fake, [16]byte{}, clock.Now(), nil)}); err != nil {
		t.Fatal(err)
	}
	if err := mnc.Flush(); err != nil {
		t.Fatal(err)
	}
	got, err := signal.AskHolders(context.Background(), bnc, bob.Key, alice.Key, blob, signal.HoldersOptions{Now: clock.Now, Timeout: 30 * time.Second})
	if err != nil || len(got) != 1 || got[0].Holder != carol.Key {
		t.Fatalf("AskHolders over the budget: %v, %v", got, err)
	}
	if s, want := c.Stats(), (signal.AnswerStats{Answered: 2, Cookied: 1}); s != want {
		t.Errorf("counters %+v, want %+v", s, want)
	}
}
