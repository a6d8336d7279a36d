package chat

import (
	"bytes"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/logtest"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/translog/logserver"
)

// viewHeader routes a client's requests to the lying sig-server's other
// face (see startViewStack).
const viewHeader = "X-Test-View"

// viewTransport marks every request of a client with its view.
type viewTransport struct{ view string }

func (t viewTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(viewHeader, t.view)
	return http.DefaultTransport.RoundTrip(r)
}

// viewStack is a stack whose sig-server keeps a log, and can lie: its
// address serves the honest server's handler, except the chain reads and
// the log reads of a client whose requests say "liar", which another
// server answers, with the same log key and another history.
type viewStack struct {
	st           *stacktest.Stack
	honest, liar *logtest.Server
	alice, bob   *stacktest.User
	evil         *sigchain.Link // the link only the liar holds
}

// startViewStack starts the stack and registers alice and bob (at the
// honest server, and copied to the liar). With split, the two logs then
// differ at the same size: the honest one logs carol's eldest link, the
// liar an add_device link of alice's chain (an attacker's device, signed
// with her words) that her own client never sees.
func startViewStack(t *testing.T, split bool) *viewStack {
	t.Helper()
	key := filepath.Join(t.TempDir(), "log.key")
	vs := &viewStack{honest: logtest.Start(t, logtest.Options{KeyFile: key}), liar: logtest.Start(t, logtest.Options{KeyFile: key})}
	vs.st = stacktest.Start(t, stacktest.Options{WrapSigServer: vs.route})
	vs.register(t)
	if split {
		vs.st.NewUser(t, "carol")
		_, req := stacktest.NewDeviceRequest(t, "evil")
		l, err := sigchain.NewLink(vs.alice.Identity, vs.alice.Chain, sigchain.TypeAddDevice, sigchain.AddDeviceBody(req), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		appendChainAt(t, vs.liar, []*sigchain.Link{l})
		vs.evil = l
	}
	return vs
}

// register registers alice and bob at the stack (the honest server) and
// copies their chains to the liar.
func (vs *viewStack) register(t *testing.T) {
	t.Helper()
	vs.alice, vs.bob = vs.st.NewUser(t, "alice"), vs.st.NewUser(t, "bob")
	for _, u := range []*stacktest.User{vs.alice, vs.bob} {
		links, err := vs.honest.Client(nil).Fetch(testCtx(t), u.Key, 0)
		if err != nil {
			t.Fatal(err)
		}
		appendChainAt(t, vs.liar, links)
	}
}

// route is the stack's sig-server: the honest server, but for a "liar"
// client's chain and log reads, which the liar answers.
func (vs *viewStack) route(http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chainRead := strings.HasPrefix(r.URL.Path, sigchain.ChainsPath) && !strings.Contains(strings.TrimPrefix(r.URL.Path, sigchain.ChainsPath), "/")
		logRead := r.URL.Path == logserver.InfoPath || strings.HasPrefix(r.URL.Path, logserver.LogPath)
		if r.Header.Get(viewHeader) == "liar" && r.Method == http.MethodGet && (chainRead || logRead) {
			vs.liar.Logged.ServeHTTP(w, r)
			return
		}
		vs.honest.Logged.ServeHTTP(w, r)
	})
}

func appendChainAt(t *testing.T, s *logtest.Server, links []*sigchain.Link) {
	t.Helper()
	for _, l := range links {
		if err := s.Client(nil).Append(testCtx(t), l); err != nil {
			t.Fatalf("appending seqno %d: %v", l.Seqno(), err)
		}
	}
}

// shownTo opens a client (sending log views) that the sig-server shows
// view ("liar" or "").
func shownTo(view string) clientOpt {
	return func(c *Config) {
		withLogViews(c)
		c.Client.HTTPClient = &http.Client{Transport: viewTransport{view}, Timeout: 20 * time.Second}
	}
}

// withLogViews makes a test client send log views (openClientIn turns
// them off).
func withLogViews(c *Config) { c.LogViewInterval = 0 }

// onSplit records the split views a client reports.
type onSplit struct {
	mu  sync.Mutex
	got []SplitView
}

func (o *onSplit) opt() clientOpt {
	return func(c *Config) {
		c.OnSplitView = func(s SplitView) { o.mu.Lock(); o.got = append(o.got, s); o.mu.Unlock() }
	}
}

// TestLogViewSplitDetected: a sig-server shows bob a chain of alice's
// with an extra device (and its log, with the same key, a history that
// says so) and alice her honest one. After ONE message between them, the
// receiver has recorded a split view naming both checkpoints and flagged
// the sender: in either direction.
func TestLogViewSplitDetected(t *testing.T) {
	for _, dir := range []string{"alice to bob", "bob to alice"} {
		t.Run(dir, func(t *testing.T) {
			vs := startViewStack(t, true)
			var seen onSplit
			optsA, optsB := []clientOpt{shownTo("")}, []clientOpt{shownTo("liar")}
			if dir == "alice to bob" {
				optsB = append(optsB, seen.opt())
			} else {
				optsA = append(optsA, seen.opt())
			}
			a := openClient(t, vs.st, vs.alice, optsA...)
			b := openClient(t, vs.st, vs.bob, optsB...)
			from, to := a, b
			if dir == "bob to alice" {
				from, to = b, a
			}
			mustAdd(t, a, "bob")
			ct := mustAdd(t, b, "alice")
			if len(ct.Devices) != 2 {
				t.Fatalf("bob was not shown the extra device: %+v", ct.Devices)
			}
			honestCP, _ := a.cc.Log.Latest(testCtx(t), vs.st.SigServerURL)
			liarCP, _ := b.cc.Log.Latest(testCtx(t), vs.st.SigServerURL)
			if honestCP == nil || liarCP == nil || bytes.Equal(honestCP, liarCP) {
				t.Fatalf("the two clients hold checkpoints %q and %q", honestCP, liarCP)
			}

			mustSend(t, from, to.user.Name, "hello")
			receiveN(t, to, 1)

			svs, err := to.SplitViews(testCtx(t))
			if err != nil || len(svs) != 1 {
				t.Fatalf("%s recorded %d split views (%v), want 1; stats %+v", to.user.Name, len(svs), err, to.Stats())
			}
			sv := svs[0]
			ours, theirs := liarCP, honestCP
			if to == a {
				ours, theirs = honestCP, liarCP
			}
			if !bytes.Equal(sv.Ours, ours) || !bytes.Equal(sv.Theirs, theirs) || sv.Contact != from.user.Key || sv.Origin != logtest.Origin || sv.Reason == "" {
				t.Fatalf("split view %+v\nwant ours %q theirs %q", sv, ours, theirs)
			}
			seen.mu.Lock()
			told := len(seen.got)
			seen.mu.Unlock()
			if told != 1 {
				t.Fatalf("OnSplitView told %d times", told)
			}
			got, err := to.Contact(testCtx(t), from.user.Name)
			if err != nil || got.Flag != FlagChainRewritten {
				t.Fatalf("%s's contact %s: %+v, %v; want flagged chain_rewritten", to.user.Name, from.user.Name, got, err)
			}
			if !contains(to.log.String(), "SPLIT VIEW") || !contains(to.log.String(), strings.ReplaceAll(string(theirs), "\n", `\n`)) {
				t.Fatal("the split view was not logged with both checkpoints")
			}
			if all, err := RecordedSplitViews(testCtx(t), to.cc.Home); err != nil || len(all) != 1 {
				t.Fatalf("RecordedSplitViews: %d, %v", len(all), err)
			}
		})
	}
}

// sendRawLogView has from send body as a log-view to to's devices (a
// contact's, or a stranger's as its chain lists them), bypassing the
// timing of Send.
func sendRawLogView(t *testing.T, from *testClient, to kez.PublicKey, body []byte) {
	t.Helper()
	from.mu.Lock()
	cs := from.byKey[to]
	var ct Contact
	var devs []chainDevice
	if cs != nil {
		ct, devs = cs.c, cs.devices
	}
	from.mu.Unlock()
	var ts []target
	if cs != nil {
		ts = from.contactTargets(&ct, devs)
	} else {
		var err error
		if ts, err = from.strangerTargets(testCtx(t), to); err != nil {
			t.Fatal(err)
		}
	}
	p, err := from.publishIn(testCtx(t), ts, Message{Kind: KindLogView, Body: body}, false, false, false, nil)
	if err == nil {
		_, err = p.Wait(testCtx(t))
	}
	if err != nil {
		t.Fatalf("%s sends a log-view: %v", from.user.Name, err)
	}
}

// receiveLogViews receives until the client has checked or dropped n
// log-views in all.
func receiveLogViews(t *testing.T, c *testClient, n uint64) {
	t.Helper()
	receiveUntil(t, c, "log-views", func(int) bool { s := c.Stats(); return s.LogViews+s.LogViewsDropped >= n })
}

// TestLogViewStranger: a log-view from a key that is no contact is
// dropped unread, even one whose checkpoint contradicts the receiver's.
func TestLogViewStranger(t *testing.T) {
	vs := startViewStack(t, true)
	carol := vs.st.NewUser(t, "carol")
	c := openClient(t, vs.st, carol, shownTo(""))
	b := openClient(t, vs.st, vs.bob, shownTo("liar"))
	body := c.ownView(testCtx(t), &Contact{SigServer: vs.st.SigServerURL})
	if v, err := parseLogView(body); err != nil || len(v.Checkpoints) != 1 {
		t.Fatalf("carol's view %q: %v", body, err)
	}
	sendRawLogView(t, c, vs.bob.Key, body)
	receiveLogViews(t, b, 1)
	if s := b.Stats(); s.LogViews != 0 || s.LogViewsDropped != 1 || s.SplitViews != 0 || s.Rejected != 0 {
		t.Fatalf("a stranger's log-view: %+v", s)
	}
	if svs, _ := b.SplitViews(testCtx(t)); len(svs) != 0 {
		t.Fatalf("a stranger's log-view recorded %+v", svs)
	}
	if es := mustInbox(t, b, true); len(es) != 0 {
		t.Fatalf("a log-view was stored: %+v", es)
	}
}

// TestLogViewFlood: a contact sending log-views as fast as it can gets
// one checked per minute (the receiver's clock); the rest are dropped
// unread.
func TestLogViewFlood(t *testing.T) {
	vs := startViewStack(t, false)
	var offset atomic.Int64
	clock := func(c *Config) {
		c.Client.Clock = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	}
	a := openClient(t, vs.st, vs.alice)
	b := openClient(t, vs.st, vs.bob, clock)
	mustAdd(t, a, "bob")
	ct := mustAdd(t, b, "alice")
	body := a.ownView(testCtx(t), ct)
	for range 5 {
		sendRawLogView(t, a, vs.bob.Key, body)
	}
	receiveLogViews(t, b, 5)
	if s := b.Stats(); s.LogViews != 1 || s.LogViewsDropped != 4 || s.SplitViews != 0 {
		t.Fatalf("five log-views at once: %+v", s)
	}
	offset.Store(int64(logViewMin + time.Second))
	sendRawLogView(t, a, vs.bob.Key, body)
	receiveLogViews(t, b, 6)
	if s := b.Stats(); s.LogViews != 2 || s.LogViewsDropped != 4 {
		t.Fatalf("a log-view a minute later: %+v", s)
	}
	if got, _ := b.Contact(testCtx(t), "alice"); got.Flag != FlagNone {
		t.Fatalf("an honest view flagged alice: %+v", got)
	}
}

// TestLogViewSendTiming: Send sends a log-view before the first message
// to a contact, not again within the hour while the view is unchanged,
// and again once it changed (a minute later at the earliest).
func TestLogViewSendTiming(t *testing.T) {
	vs := startViewStack(t, false)
	var offset atomic.Int64
	a := openClient(t, vs.st, vs.alice, withLogViews, func(c *Config) {
		c.Client.Clock = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	})
	b := openClient(t, vs.st, vs.bob)
	mustAdd(t, a, "bob")
	mustAdd(t, b, "alice")
	mustSend(t, a, "bob", "one")
	mustSend(t, a, "bob", "two")
	if n := a.Stats().LogViewsSent; n != 1 {
		t.Fatalf("two messages sent %d log-views, want 1", n)
	}
	offset.Store(int64(2 * logViewMin))
	mustSend(t, a, "bob", "three")
	if n := a.Stats().LogViewsSent; n != 1 {
		t.Fatalf("an unchanged view was sent again within the hour: %d", n)
	}
	// The log grows (carol registers) and alice's client sees it.
	vs.st.NewUser(t, "carol")
	if _, err := a.OwnChain(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	mustSend(t, a, "bob", "four")
	if n := a.Stats().LogViewsSent; n != 1 {
		t.Fatalf("a changed view was sent within the minute: %d", n)
	}
	offset.Store(int64(4 * logViewMin))
	mustSend(t, a, "bob", "five")
	if n := a.Stats().LogViewsSent; n != 2 {
		t.Fatalf("a changed view was not sent: %d", n)
	}
	// Bob's clock did not move: he checks the first and drops the
	// second, which came within his minute.
	receiveN(t, b, 5)
	receiveLogViews(t, b, 2)
	if s := b.Stats(); s.LogViews != 1 || s.LogViewsDropped != 1 || s.SplitViews != 0 {
		t.Fatalf("bob: %+v", s)
	}
}

// TestLogViewHeadMismatch: the sig-server shows bob another link at
// seqno 2 of alice's chain than her own client pinned, from logs bob
// cannot compare (two origins): the head alice's log-view carries gives
// it away, and bob flags her and records it.
func TestLogViewHeadMismatch(t *testing.T) {
	vs := &viewStack{honest: logtest.Start(t, logtest.Options{Origin: "a.test/sigchain-log"}), liar: logtest.Start(t, logtest.Options{Origin: "b.test/sigchain-log"})}
	vs.st = stacktest.Start(t, stacktest.Options{WrapSigServer: vs.route})
	vs.register(t)
	// Alice's own new device at the honest server, an attacker's at the
	// liar.
	_, req := stacktest.NewDeviceRequest(t, "laptop")
	honest := stacktest.AppendLinkAt(t, vs.honest.URL, vs.alice.Identity, sigchain.TypeAddDevice, sigchain.AddDeviceBody(req))
	_, req = stacktest.NewDeviceRequest(t, "evil")
	evil := stacktest.AppendLinkAt(t, vs.liar.URL, vs.alice.Identity, sigchain.TypeAddDevice, sigchain.AddDeviceBody(req))
	if honest.Seqno() != 2 || evil.Seqno() != 2 {
		t.Fatalf("seqnos %d and %d", honest.Seqno(), evil.Seqno())
	}
	a := openClient(t, vs.st, vs.alice, shownTo(""))
	b := openClient(t, vs.st, vs.bob, shownTo("liar"))
	mustAdd(t, a, "bob")
	if ct := mustAdd(t, b, "alice"); ct.Pin.Head != evil.ID() {
		t.Fatalf("bob pinned %s", ct.Pin.Head)
	}
	mustSend(t, a, "bob", "hello")
	receiveN(t, b, 1)
	svs, err := b.SplitViews(testCtx(t))
	if err != nil || len(svs) != 1 {
		t.Fatalf("%d split views, %v; stats %+v", len(svs), err, b.Stats())
	}
	if sv := svs[0]; sv.Contact != vs.alice.Key || !contains(sv.Reason, honest.ID().String()) || !contains(sv.Reason, evil.ID().String()) {
		t.Fatalf("split view %+v", sv)
	}
	if got, _ := b.Contact(testCtx(t), "alice"); got.Flag != FlagChainRewritten {
		t.Fatalf("alice is %+v, want flagged", got)
	}
}
