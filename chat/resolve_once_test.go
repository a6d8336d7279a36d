package chat

import (
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/internal/testenv/testlog"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/sigchain/sqlitestore"
)

// rotate appends a link to u's chain at the sig-server: encryption key
// generation gen.
func rotate(t *testing.T, sigURL string, u *stacktest.User, gen uint32) {
	t.Helper()
	ctx := testCtx(t)
	sc := &sigchain.Client{BaseURL: sigURL}
	st, err := sc.FetchVerified(ctx, u.Key, nil)
	if err != nil {
		t.Fatal(err)
	}
	l, err := sigchain.NewLink(u.Identity, st, sigchain.TypeSetEncryptionKey, sigchain.SetEncryptionKeyBody(u.Identity.EncryptionKey(gen).PublicKey(), gen), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := sc.Append(ctx, l); err != nil {
		t.Fatal(err)
	}
}

// A contact's chain is fetched and verified once when it is added, then
// only from its head on, once per refresh interval; the chain of a key
// that is not a contact is fetched whole once too, not on every send.
// Counted at a real sig-server.
func TestChainsAreFetchedOnce(t *testing.T) {
	reqs := &stacktest.ChainFetches{}
	st := stacktest.Start(t, stacktest.Options{WrapSigServer: reqs.Wrap})
	au, bu, cu := st.NewUser(t, "alice"), st.NewUser(t, "bob"), st.NewUser(t, "carol")
	rotate(t, st.SigServerURL, bu, 1) // two links each, so that a fetch of the new links is not a fetch of all
	rotate(t, st.SigServerURL, cu, 1)
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	alice := openClient(t, st, au, func(c *Config) {
		c.Client.Clock = func() time.Time { return time.Unix(0, now.Load()) }
	})
	interval := alice.cfg.RefreshInterval
	ctx := testCtx(t)
	reqs.Of(bu.Key) // registering and rotating fetched it
	reqs.Of(cu.Key)

	mustAdd(t, alice, "bob")
	if got := reqs.Of(bu.Key); !slices.Equal(got, []string{"since=0"}) {
		t.Fatalf("adding bob fetched his chain %q, want once, whole", got)
	}
	for range 3 {
		mustSend(t, alice, "bob", "hello")
	}
	if got := reqs.Of(bu.Key); len(got) != 0 {
		t.Fatalf("three sends within the refresh interval fetched bob's chain %q", got)
	}
	now.Add(int64(interval))
	mustSend(t, alice, "bob", "a minute later")
	if got := reqs.Of(bu.Key); !slices.Equal(got, []string{"since=1"}) {
		t.Fatalf("the send after the interval fetched bob's chain %q, want once from the pinned head (seqno 2)", got)
	}

	for range 3 {
		if _, err := alice.SendKey(ctx, cu.Key, "not a contact"); err != nil {
			t.Fatal(err)
		}
	}
	if got := reqs.Of(cu.Key); !slices.Equal(got, []string{"since=0"}) {
		t.Fatalf("three sends to carol's key fetched her chain %q, want once, whole", got)
	}
	rotate(t, st.SigServerURL, cu, 2)
	reqs.Of(cu.Key)
	now.Add(int64(interval))
	if _, err := alice.SendKey(ctx, cu.Key, "after her rotation"); err != nil {
		t.Fatal(err)
	}
	if got := reqs.Of(cu.Key); !slices.Equal(got, []string{"since=1"}) {
		t.Fatalf("the send after the interval fetched carol's chain %q, want once from the known head", got)
	}
	// The messages went to her keys of the time: she can open them all.
	carol := openClient(t, st, cu)
	receiveN(t, carol, 4)
	reqs2, err := carol.Requests(ctx)
	if err != nil || len(reqs2) != 4 || reqs2[len(reqs2)-1].Text() != "after her rotation" || carol.Stats().Rejected != 0 {
		t.Fatalf("carol's requests: %q, %v, stats %+v", texts(reqs2), err, carol.Stats())
	}
}

// sigServerAt starts a real sig-server over its own SQLite file, stopped
// in t.Cleanup (or earlier, by the test).
func sigServerAt(t *testing.T, name string) *httptest.Server {
	t.Helper()
	chains, err := sqlitestore.Open(filepath.Join(t.TempDir(), name+".db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { chains.Close() })
	srv := httptest.NewServer(sigchain.NewHandler(chains, sigchain.WithLogger(slog.New(slog.DiscardHandler)), sigchain.WithLimits(sigchain.NoLimits())))
	t.Cleanup(srv.Close)
	return srv
}

// The operator moves the sig-server: the chains go to a new one, the
// registry names it, the old address goes away. A contact pinned at the
// old address is checked at the new one (on both paths), and the new
// address is remembered; a "moved" sig-server that rewrites the pinned
// chain is caught all the same.
func TestContactFollowsMovedSigServer(t *testing.T) {
	ctx := testCtx(t)
	const domain = "kez.test"
	regStore, err := handles.OpenSQLite(filepath.Join(t.TempDir(), "handles.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { regStore.Close() })
	// The home chat-server's registry, as it is deployed naming a
	// sig-server: real handles.Servers over one registry file, one per
	// configuration, behind one address.
	var front atomic.Pointer[handles.Server]
	deploy := func(sigURL string) {
		srv, err := handles.NewServer(handles.ServerConfig{Domain: domain, Store: regStore, SigServer: &sigchain.Client{BaseURL: sigURL},
			Logger: slog.New(slog.DiscardHandler), Limits: handles.NoLimits()})
		if err != nil {
			t.Fatal(err)
		}
		front.Store(srv)
	}
	home := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { front.Load().ServeHTTP(w, r) }))
	t.Cleanup(home.Close)

	sigA := sigServerAt(t, "a")
	deploy(sigA.URL)
	bob := &stacktest.User{Name: "bob", Identity: stacktest.Identity("bob"), Handle: handles.Handle{Name: "bob", Domain: domain}}
	bob.Key = bob.Identity.PublicKey()
	if _, err := handles.Register(ctx, bob.Identity, bob.Handle, handles.RegisterOptions{ServerURL: home.URL, SigServerURL: sigA.URL}); err != nil {
		t.Fatal(err)
	}
	logs := &testlog.Buffer{}
	c, err := Open(ctx, Config{Client: client.Config{
		Identity: stacktest.Identity("alice"), Home: t.TempDir(),
		ServerURL: home.URL, Domain: domain, SigServerURL: sigA.URL,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	alice := &testClient{Client: c, log: logs, user: &stacktest.User{Name: "alice"}}
	if ct := mustAdd(t, alice, "bob"); ct.SigServer != sigA.URL {
		t.Fatalf("pinned at %q, want %q", ct.SigServer, sigA.URL)
	}
	check := func(what string, gen uint32, sigURL string) {
		t.Helper()
		ct, err := alice.Contact(ctx, "bob")
		if err != nil || ct.Flag != FlagNone || ct.Generation != gen || ct.Pin.Seqno != uint64(gen)+1 || ct.SigServer != sigURL {
			t.Fatalf("%s: %v, flag %q, generation %d, seqno %d, sig-server %q; want generation %d at %q\n%s",
				what, err, ct.Flag, ct.Generation, ct.Pin.Seqno, ct.SigServer, gen, sigURL, logs.Tail(3000))
		}
	}
	// move copies bob's chain to the sig-server at to, names it in the
	// registry, stops the old one and has bob rotate his key there.
	move := func(from, to *httptest.Server, gen uint32) {
		t.Helper()
		links, err := (&sigchain.Client{BaseURL: from.URL}).Fetch(ctx, bob.Key, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range links {
			if err := (&sigchain.Client{BaseURL: to.URL}).Append(ctx, l); err != nil {
				t.Fatal(err)
			}
		}
		deploy(to.URL)
		from.Close()
		rotate(t, to.URL, bob, gen)
	}

	// The send path asks the registry, which names the new sig-server.
	sigB := sigServerAt(t, "b")
	move(sigA, sigB, 1)
	if _, err := alice.CheckContact(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	check("checked after the first move", 1, sigB.URL)

	// The receive path tries the stored sig-server first; it is gone, so
	// the handle's domain says where the chain is now.
	sigC := sigServerAt(t, "c")
	move(sigB, sigC, 2)
	cs, err := alice.contact(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.refreshContact(ctx, cs, false, true); err != nil {
		t.Fatal(err)
	}
	check("refreshed on receipt after the second move", 2, sigC.URL)
	if got := events(t, alice, "bob"); !slices.Equal(got, []string{"added", "encryption_key_rotated", "sig_server_moved", "encryption_key_rotated", "sig_server_moved"}) {
		t.Errorf("events: %q", got)
	}
	// The new address survives a restart.
	alice.Close()
	again, err := Open(ctx, Config{Client: client.Config{Identity: stacktest.Identity("alice"), Home: alice.cc.Home, Domain: domain, SigServerURL: sigC.URL}})
	if err != nil {
		t.Fatal(err)
	}
	if ct, err := again.Contact(ctx, "bob"); err != nil || ct.SigServer != sigC.URL {
		t.Fatalf("after a restart: %v %+v", err, ct)
	}
	again.Close()
	c, err = Open(ctx, Config{Client: client.Config{Identity: stacktest.Identity("alice"), Home: alice.cc.Home,
		ServerURL: home.URL, Domain: domain, SigServerURL: sigC.URL, Logger: slog.New(slog.NewTextHandler(logs, nil))}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	alice.Client = c

	// A registry that names a sig-server showing another history at the
	// pinned seqno: the contact is flagged, the move does not launder it.
	sigD := sigServerAt(t, "d")
	links, err := (&sigchain.Client{BaseURL: sigC.URL}).Fetch(ctx, bob.Key, 0)
	if err != nil {
		t.Fatal(err)
	}
	st, err := sigchain.Verify(links[:2])
	if err != nil {
		t.Fatal(err)
	}
	other, err := sigchain.NewLink(bob.Identity, st, sigchain.TypeSetEncryptionKey, sigchain.SetEncryptionKeyBody(bob.Identity.EncryptionKey(9).PublicKey(), 9), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []*sigchain.Link{links[0], links[1], other} {
		if err := (&sigchain.Client{BaseURL: sigD.URL}).Append(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	deploy(sigD.URL)
	ct, err := alice.CheckContact(ctx, "bob")
	if !errors.Is(err, ErrChainRewritten) || !errors.Is(err, sigchain.ErrFork) || ct.Flag != FlagChainRewritten || ct.SigServer != sigC.URL {
		t.Fatalf("a moved sig-server with another history: %v, %+v", err, ct)
	}
}

// A stored sig-server that is still up but shows less than the pin (a
// stale copy, or one left behind by a move) does not flag the contact by
// itself: the handle's domain is asked where the chain is, and only what
// that sig-server shows counts.
func TestStaleSigServerDoesNotFlag(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	rotate(t, st.SigServerURL, bu, 1)
	alice := openClient(t, st, au)
	mustAdd(t, alice, "bob")

	// Alice's stored address for bob's chain now holds only his eldest link.
	stale := sigServerAt(t, "stale")
	links, err := (&sigchain.Client{BaseURL: st.SigServerURL}).Fetch(testCtx(t), bu.Key, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := (&sigchain.Client{BaseURL: stale.URL}).Append(testCtx(t), links[0]); err != nil {
		t.Fatal(err)
	}
	cs, err := alice.contact(testCtx(t), "bob")
	if err != nil {
		t.Fatal(err)
	}
	alice.mu.Lock()
	cs.c.SigServer = stale.URL
	alice.mu.Unlock()
	if err := alice.refreshContact(testCtx(t), cs, false, true); err != nil {
		t.Fatalf("refresh with a stale stored sig-server: %v", err)
	}
	ct, _ := alice.Contact(testCtx(t), "bob")
	if ct.Flag != FlagNone || ct.SigServer != st.SigServerURL || ct.Pin.Seqno != 2 {
		t.Fatalf("after the refresh: %+v", ct)
	}
}
