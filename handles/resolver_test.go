package handles

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// Two operators, two domains, two sig-servers, all on loopback: a client
// of alpha.test resolves and verifies a user of beta.test via WebFinger.
func TestFederation(t *testing.T) {
	alpha, beta := newStack(t, "alpha.test"), newStack(t, "beta.test")
	alice := alpha.register(t, "alice")
	bob := beta.register(t, "bob")
	ctx := context.Background()

	r := &Resolver{DefaultDomain: "alpha.test", HomeServer: alpha.chat.URL, BaseURLs: map[string]string{"beta.test": beta.chat.URL}}
	for _, tc := range []struct {
		in     string
		id     *kez.Identity
		sigURL string
	}{
		{"@bob@beta.test", bob, beta.sig.URL}, // WebFinger at beta
		{"alice", alice, alpha.sig.URL},       // home lookup at alpha
		{"Alice@alpha.test", alice, alpha.sig.URL},
	} {
		res, err := r.Resolve(ctx, tc.in)
		if err != nil {
			t.Fatalf("Resolve(%q): %v", tc.in, err)
		}
		if res.Key != tc.id.PublicKey() || res.State.Key() != tc.id.PublicKey() ||
			string(res.EncryptionKey.Bytes()) != string(tc.id.EncryptionKey(0).PublicKey().Bytes()) ||
			res.Generation != 0 || res.SigchainURL != ChainURL(tc.sigURL, tc.id.PublicKey()) ||
			res.State.Handle() != res.Handle.String() {
			t.Fatalf("Resolve(%q) = %+v", tc.in, res)
		}
	}

	// A resolver at beta resolves alice the other way round.
	rb := &Resolver{DefaultDomain: "beta.test", HomeServer: beta.chat.URL, BaseURLs: map[string]string{"alpha.test": alpha.chat.URL}}
	if res, err := rb.Resolve(ctx, "alice@alpha.test"); err != nil || res.Key != alice.PublicKey() {
		t.Fatalf("beta resolving alice: %+v %v", res, err)
	}

	down := httptest.NewServer(http.NotFoundHandler())
	r.BaseURLs["gamma.test"] = down.URL
	down.Close()
	for in, want := range map[string]error{
		"nobody@beta.test": ErrNotFound,
		"nobody":           ErrNotFound,
		"bob@gamma.test":   ErrUnreachable, // its server is down
	} {
		if _, err := r.Resolve(ctx, in); !errors.Is(err, want) {
			t.Errorf("Resolve(%q): %v, want %v", in, err, want)
		}
	}
	if _, err := r.Resolve(ctx, "b\u043eb@beta.test"); ReasonOf(err) != ReasonHomoglyph {
		t.Errorf("homoglyph: %v", err)
	}
	if err := beta.reg.SetSuspended(ctx, Handle{"bob", "beta.test"}, true); err != nil {
		t.Fatal(err)
	}
	r2 := &Resolver{DefaultDomain: "alpha.test", BaseURLs: r.BaseURLs}
	if _, err := r2.Resolve(ctx, "bob@beta.test"); !errors.Is(err, ErrSuspended) {
		t.Errorf("suspended: %v", err)
	}
}

// A lying chat-server or sig-server is caught: the registry's answer and
// the verified chain must agree.
func TestResolverDetectsLies(t *testing.T) {
	beta := newStack(t, "beta.test")
	bob := beta.register(t, "bob")
	mallory := beta.register(t, "mallory")
	ctx := context.Background()

	setKey := func(v map[string]any, key string) {
		for _, l := range v["links"].([]any) {
			if p, ok := l.(map[string]any)["properties"].(map[string]any); ok {
				p[PropKey] = key
			}
		}
	}
	setChain := func(v map[string]any, href string) {
		for _, l := range v["links"].([]any) {
			if lm := l.(map[string]any); lm["rel"] == RelSigchain {
				lm["href"] = href
			}
		}
	}
	lie := func(rewrite func(v map[string]any)) *httptest.Server {
		return rewriting(t, beta.server, func(path string, v map[string]any) { rewrite(v) })
	}
	cases := map[string]*httptest.Server{
		// The key is mallory's, the chain link still bob's.
		"key swapped": lie(func(v map[string]any) { setKey(v, mallory.PublicKey().String()) }),
		// Key and chain both mallory's: the chain claims mallory, not bob.
		"key and chain swapped": lie(func(v map[string]any) {
			setKey(v, mallory.PublicKey().String())
			setChain(v, ChainURL(beta.sig.URL, mallory.PublicKey()))
		}),
		// The answer is about someone else.
		"subject changed": lie(func(v map[string]any) { v["subject"] = "acct:mallory@beta.test" }),
		// The chain link points at another key's chain.
		"chain of another key": lie(func(v map[string]any) { setChain(v, ChainURL(beta.sig.URL, mallory.PublicKey())) }),
		// No key link.
		"links dropped": lie(func(v map[string]any) { v["links"] = []any{} }),
	}
	// A sig-server that serves mallory's chain under bob's key.
	swapSig := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.URL.Path = strings.Replace(r.URL.Path, bob.PublicKey().String(), mallory.PublicKey().String(), 1)
		r.SetPathValue("key", mallory.PublicKey().String())
		beta.sig.Config.Handler.ServeHTTP(w, r)
	}))
	defer swapSig.Close()
	cases["sig-server serves another chain"] = lie(func(v map[string]any) { setChain(v, ChainURL(swapSig.URL, bob.PublicKey())) })
	// A sig-server without bob's chain.
	emptySig := newStack(t, "empty.test").sig
	cases["sig-server without the chain"] = lie(func(v map[string]any) { setChain(v, ChainURL(emptySig.URL, bob.PublicKey())) })

	for name, srv := range cases {
		r := &Resolver{DefaultDomain: "alpha.test", BaseURLs: map[string]string{"beta.test": srv.URL}}
		res, err := r.Resolve(ctx, "bob@beta.test")
		if !errors.Is(err, ErrMismatch) {
			t.Errorf("%s: %+v, %v; want ErrMismatch", name, res, err)
		}
		t.Logf("%s: %v", name, err)
	}

	// An operator who writes a record by hand, past the claim check: the
	// registry gives carol to mallory's key, whose chain claims mallory.
	if _, err := beta.reg.Claim(ctx, Record{Handle: Handle{"carol", "beta.test"}, Key: newIdentity(t).PublicKey()}); err != nil {
		t.Fatal(err)
	}
	if err := beta.reg.Release(ctx, Handle{"mallory", "beta.test"}); err != nil {
		t.Fatal(err)
	}
	if _, err := beta.reg.Claim(ctx, Record{Handle: Handle{"carla", "beta.test"}, Key: mallory.PublicKey()}); err != nil {
		t.Fatal(err)
	}
	r := &Resolver{DefaultDomain: "beta.test", HomeServer: beta.chat.URL, BaseURLs: map[string]string{"beta.test": beta.chat.URL}}
	for _, in := range []string{"carla", "carol"} { // via the home lookup
		if _, err := r.Resolve(ctx, in); !errors.Is(err, ErrMismatch) {
			t.Errorf("%s via lookup: %v, want ErrMismatch", in, err)
		}
	}
	r.HomeServer = "" // via WebFinger
	if _, err := r.Resolve(ctx, "carla"); !errors.Is(err, ErrMismatch) {
		t.Errorf("carla via WebFinger: %v, want ErrMismatch", err)
	}
	// A home server whose lookup answers for another handle.
	liar := rewriting(t, beta.server, func(path string, v map[string]any) { v["handle"] = "bob@beta.test" })
	r = &Resolver{DefaultDomain: "beta.test", HomeServer: liar.URL}
	if _, err := r.Resolve(ctx, "carla"); !errors.Is(err, ErrMismatch) {
		t.Errorf("lookup for another handle: %v", err)
	}
}

func TestResolverCache(t *testing.T) {
	beta := newStack(t, "beta.test")
	bob := beta.register(t, "bob")
	var asked atomic.Int32
	counting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		beta.server.ServeHTTP(w, r)
	}))
	defer counting.Close()

	now := time.Unix(1_800_000_000, 0)
	r := &Resolver{DefaultDomain: "alpha.test", BaseURLs: map[string]string{"beta.test": counting.URL},
		TTL: 30 * time.Second, Now: func() time.Time { return now }}
	ctx := context.Background()
	for range 3 {
		if res, err := r.Resolve(ctx, "bob@beta.test"); err != nil || res.Key != bob.PublicKey() {
			t.Fatal(res, err)
		}
	}
	if asked.Load() != 1 {
		t.Fatalf("asked %d times within the TTL", asked.Load())
	}
	// A returned result is a copy: changing it does not change the cache.
	res, _ := r.Resolve(ctx, "bob@beta.test")
	res.Key = kez.PublicKey{}
	if res, _ := r.Resolve(ctx, "bob@beta.test"); res.Key != bob.PublicKey() {
		t.Fatal("the cache was changed through a result")
	}
	now = now.Add(31 * time.Second)
	if _, err := r.Resolve(ctx, "bob@beta.test"); err != nil || asked.Load() != 2 {
		t.Fatalf("after the TTL: %v, asked %d", err, asked.Load())
	}
	r.Forget(Handle{"bob", "beta.test"})
	if _, err := r.Resolve(ctx, "bob@beta.test"); err != nil || asked.Load() != 3 {
		t.Fatalf("after Forget: %v, asked %d", err, asked.Load())
	}
	// Failures are not cached; when the server goes away the cached
	// answer lasts only its TTL.
	counting.Close()
	if _, err := r.Resolve(ctx, "bob@beta.test"); err != nil {
		t.Fatalf("cached while down: %v", err)
	}
	now = now.Add(time.Minute)
	if _, err := r.Resolve(ctx, "bob@beta.test"); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("down after the TTL: %v", err)
	}
	// A negative TTL disables the cache.
	nc := &Resolver{DefaultDomain: "beta.test", HomeServer: beta.chat.URL, TTL: -1}
	if _, err := nc.Resolve(ctx, "bob"); err != nil || len(nc.cache) != 0 {
		t.Fatalf("no-cache resolver: %v, %d cached", err, len(nc.cache))
	}
}

func TestResolverSigServerDown(t *testing.T) {
	beta := newStack(t, "beta.test")
	beta.register(t, "bob")
	beta.sig.Close()
	r := &Resolver{DefaultDomain: "beta.test", HomeServer: beta.chat.URL}
	if _, err := r.Resolve(context.Background(), "bob"); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("sig-server down: %v", err)
	}
}

// A rotated encryption key is what the resolver returns (the chain is the
// authority; the registry's copy is a hint).
func TestResolverFollowsRotation(t *testing.T) {
	beta := newStack(t, "beta.test")
	bob := beta.register(t, "bob")
	ctx := context.Background()
	st, err := beta.sigc.FetchVerified(ctx, bob.PublicKey(), nil)
	if err != nil {
		t.Fatal(err)
	}
	l, err := sigchain.NewLink(bob, st, sigchain.TypeSetEncryptionKey, sigchain.SetEncryptionKeyBody(bob.EncryptionKey(1).PublicKey(), 1), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := beta.sigc.Append(ctx, l); err != nil {
		t.Fatal(err)
	}
	r := &Resolver{DefaultDomain: "beta.test", HomeServer: beta.chat.URL}
	res, err := r.Resolve(ctx, "bob")
	if err != nil || res.Generation != 1 || !res.EncryptionKey.Equal(bob.EncryptionKey(1).PublicKey()) {
		t.Fatalf("after rotation: %+v %v", res, err)
	}
}

// ResolveFresh asks the registry again but fetches only what is new after
// a known state; a known state the sig-server contradicts is an error, and
// so is a chain that no longer claims the handle.
func TestResolveFresh(t *testing.T) {
	beta := newStack(t, "beta.test")
	bob := beta.register(t, "bob")
	ctx := context.Background()
	chainPath := "GET /v1/chains/" + bob.PublicKey().String()
	r := &Resolver{DefaultDomain: "beta.test", HomeServer: beta.chat.URL}
	beta.sigLog.take()

	first, err := r.Resolve(ctx, "bob")
	if err != nil || first.SigServer != beta.sig.URL || len(first.Links) != 1 || first.Links[0].Seqno() != 1 {
		t.Fatalf("Resolve: %v %+v", err, first)
	}
	if got := beta.sigLog.take(); len(got) != 1 || got[0] != chainPath+"?since=0" {
		t.Fatalf("Resolve asked the sig-server %q", got)
	}
	// The cache answers Resolve; ResolveFresh asks again.
	if _, err := r.Resolve(ctx, "bob"); err != nil || len(beta.sigLog.take()) != 0 {
		t.Fatalf("cached Resolve: %v", err)
	}

	// Bob's chain grows: from the known state only the new link is fetched
	// (and the known head, to check it is still there).
	l, err := sigchain.NewLink(bob, first.State, sigchain.TypeSetEncryptionKey, sigchain.SetEncryptionKeyBody(bob.EncryptionKey(1).PublicKey(), 1), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := beta.sigc.Append(ctx, l); err != nil {
		t.Fatal(err)
	}
	beta.sigLog.take()
	h := Handle{"bob", "beta.test"}
	res, err := r.ResolveFresh(ctx, h, first.State)
	if err != nil || res.Generation != 1 || res.State.Seqno() != 2 || len(res.Links) != 2 || res.Links[1].Seqno() != 2 {
		t.Fatalf("ResolveFresh from the known state: %v %+v", err, res)
	}
	if got := beta.sigLog.take(); len(got) != 1 || got[0] != chainPath+"?since=0" {
		// known head is seqno 1: since=0 fetches it and what follows
		t.Fatalf("ResolveFresh asked the sig-server %q", got)
	}
	res2, err := r.ResolveFresh(ctx, h, res.State)
	if err != nil || res2.State.Seqno() != 2 || len(res2.Links) != 1 {
		t.Fatalf("ResolveFresh with nothing new: %v %+v", err, res2)
	}
	if got := beta.sigLog.take(); len(got) != 1 || got[0] != chainPath+"?since=1" {
		t.Fatalf("ResolveFresh asked the sig-server %q", got)
	}
	// A from-known answer does not replace the cache; a full one does.
	if c, _ := r.Resolve(ctx, "bob"); c.State.Seqno() != 1 {
		t.Fatalf("the cache holds seqno %d", c.State.Seqno())
	}
	if full, err := r.ResolveFresh(ctx, h, nil); err != nil || full.State.Seqno() != 2 || len(full.Links) != 2 {
		t.Fatalf("full ResolveFresh: %v %+v", err, full)
	}
	if c, _ := r.Resolve(ctx, "bob"); c.State.Seqno() != 2 {
		t.Fatalf("after a full ResolveFresh the cache holds seqno %d", c.State.Seqno())
	}

	// A known state the sig-server does not have (a rollback) is refused.
	ahead, err := sigchain.NewLink(bob, res.State, sigchain.TypeSetEncryptionKey, sigchain.SetEncryptionKeyBody(bob.EncryptionKey(2).PublicKey(), 2), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	aheadState, err := res.State.Extend([]*sigchain.Link{ahead})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.ResolveFresh(ctx, h, aheadState); !errors.Is(err, sigchain.ErrRollback) || !errors.Is(err, ErrMismatch) {
		t.Fatalf("a known state ahead of the sig-server: %v", err)
	}
	// A known state that forks from the sig-server's chain is refused.
	fork, err := sigchain.NewLink(bob, first.State, sigchain.TypeSetEncryptionKey, sigchain.SetEncryptionKeyBody(bob.EncryptionKey(3).PublicKey(), 3), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	forkState, err := first.State.Extend([]*sigchain.Link{fork})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.ResolveFresh(ctx, h, forkState); !errors.Is(err, sigchain.ErrFork) {
		t.Fatalf("a known state that forks: %v", err)
	}

	// The known state of another key: the handle's own key is resolved in
	// full, for the caller to see the change.
	carla := beta.register(t, "carla")
	carlaRes, err := r.ResolveFresh(ctx, Handle{"carla", "beta.test"}, res.State)
	if err != nil || carlaRes.Key != carla.PublicKey() || len(carlaRes.Links) != 1 {
		t.Fatalf("another key's known state: %v %+v", err, carlaRes)
	}
}
