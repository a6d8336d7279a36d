package chat

// Attacks on following group-updates (docs/spec/chat.md §10.10, §10.1):
// floods of updates from a member and from a stranger, and the address an
// update names for a group of a domain the resolver treats as local.

import (
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/group"
	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/session"
)

// groupGets counts the GETs of group chains a sig-server answers.
type groupGets struct{ n atomic.Int64 }

func (g *groupGets) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, wire.GroupsPath+"/") {
			g.n.Add(1)
		}
		h.ServeHTTP(w, r)
	})
}

// A member (bob) floods carol with group-updates for club, each naming a
// seqno the pinned chain does not have, in batches of their own; then a
// stranger (mal, no member) does the same, and sends an envelope of an
// epoch the chain does not have. Carol's client fetches the chain for the
// first update only, until GroupUpdateInterval has passed on its clock;
// the update alice sends meanwhile (a real change: a new title) is kept,
// not dropped, and the chain is fetched once, with that change, by the
// first batch after the interval.
func TestGroupUpdateFlood(t *testing.T) {
	var gets groupGets
	clock := &testClock{t: time.Now()}
	tr := newTrio(t, stacktest.Options{WrapSigServer: gets.wrap}, func(c *Config) { c.Client.Clock = clock.Now })
	mal := newPerson(t, tr.st, "mal", 1, func(c *Config) { c.Client.Clock = clock.Now }).devices[0]
	ctx := testCtx(t)
	g, err := tr.a.Group(ctx, tr.name)
	if err != nil {
		t.Fatal(err)
	}
	carol := tr.carol.user
	update := func(seqno uint64) []byte {
		return marshalGroupUpdate(groupUpdate{Group: tr.name, Head: g.Head, Seqno: seqno, SigServer: tr.st.SigServerURL})
	}
	title := func() string {
		gs, err := tr.c.Groups(ctx)
		if err != nil || len(gs) != 1 {
			t.Fatalf("carol's groups: %v %v", gs, err)
		}
		return gs[0].Title
	}

	// The first update is followed at once.
	base := gets.n.Load()
	sendPairwise(t, tr.b, carol.Key, carol.Handle.String(), KindGroupUpdate, update(3))
	receiveUntil(t, tr.c, "the first update followed", func(int) bool { return gets.n.Load() == base+1 })

	// Each update in a batch of its own: a text after it, from its
	// sender, is stored once it was handled.
	handled := func(from *testClient, body []byte) {
		t.Helper()
		n := tr.c.Stats().Received
		sendPairwise(t, from, carol.Key, carol.Handle.String(), KindGroupUpdate, body)
		sendPairwise(t, from, carol.Key, carol.Handle.String(), KindText, []byte("marker"))
		receiveUntil(t, tr.c, "the marker after an update", func(int) bool { return tr.c.Stats().Received > n })
	}

	// A real change meanwhile: kept for the interval.
	if err := tr.a.SetGroupTitle(ctx, "club", "renamed"); err != nil {
		t.Fatal(err)
	}
	base = gets.n.Load()     // alice's own fetches counted
	handled(tr.a, update(3)) // alice's announce came before it

	// The member's flood, then the stranger's.
	const flood = 12
	for i := range flood {
		handled(tr.b, update(uint64(4+i)))
	}
	for i := range flood {
		handled(mal, update(uint64(100+i)))
	}
	// And an envelope of a made-up epoch from the stranger.
	sk, err := session.NewSenderKey(rand.Reader, g.ID, 99, mal.DeviceKey())
	if err != nil {
		t.Fatal(err)
	}
	env, err := sk.Seal(innerText("epoch 99"))
	if err != nil {
		t.Fatal(err)
	}
	sendRaw(t, mal, env, tr.c.DeviceKey())
	receiveUntil(t, tr.c, "mal's epoch held", func(int) bool { return tr.c.Stats().GroupHeld > 0 })
	if n := gets.n.Load() - base; n != 0 {
		t.Fatalf("carol fetched the chain %d times within the interval, want 0", n)
	}
	if n := tr.c.Stats().GroupUpdatesDeferred; n < 2+2*flood { // alice's two updates may come in one batch
		t.Errorf("%d updates deferred, want at least %d", n, 2+2*flood)
	}
	if got := title(); got != "" {
		t.Fatalf("carol sees the title %q before the interval is over", got)
	}

	// The interval is over: the next batch fetches once, with alice's
	// change.
	clock.Set(clock.Now().Add(DefaultGroupUpdateInterval))
	sendPairwise(t, mal, carol.Key, carol.Handle.String(), KindGroupUpdate, update(200))
	receiveUntil(t, tr.c, "the kept update followed", func(int) bool { return title() == "renamed" })
	if n := gets.n.Load() - base; n != 1 {
		t.Fatalf("carol fetched the chain %d times once the interval was over, want 1", n)
	}
	t.Logf("%d updates and a made-up epoch within %v: 1 fetch then, 1 after", 1+2*flood, DefaultGroupUpdateInterval)
}

// An update naming the head carol pinned, or an older seqno, makes no
// fetch at all, within the interval or after it.
func TestGroupUpdatePinnedHeadNoFetch(t *testing.T) {
	var gets groupGets
	tr := newTrio(t, stacktest.Options{WrapSigServer: gets.wrap})
	ctx := testCtx(t)
	g, err := tr.c.Group(ctx, tr.name)
	if err != nil {
		t.Fatal(err)
	}
	base := gets.n.Load()
	carol := tr.carol.user
	for _, seqno := range []uint64{g.Seqno, 1} {
		body := marshalGroupUpdate(groupUpdate{Group: tr.name, Head: g.Head, Seqno: seqno, SigServer: tr.st.SigServerURL})
		sendPairwise(t, tr.b, carol.Key, carol.Handle.String(), KindGroupUpdate, body)
	}
	sendPairwise(t, tr.b, carol.Key, carol.Handle.String(), KindText, []byte("marker"))
	receiveUntil(t, tr.c, "bob's marker", func(int) bool { return tr.c.Stats().Received > 0 })
	if n := gets.n.Load() - base; n != 0 || tr.c.Stats().GroupUpdatesDeferred != 0 {
		t.Fatalf("%d fetches, %d deferred for updates naming the pinned chain", n, tr.c.Stats().GroupUpdatesDeferred)
	}
}

// Open item 8 of the second review: a group of another domain, one the
// resolver treats as local (marked local here), was first fetched at the
// address a group-update named with the client kept for local servers
// (loopback and private addresses included), before the resolver said
// whether that address is the domain's sig-server. Mallory's domain D is
// a TLS server on the loopback (its WebFinger, and a proxy to the stack's
// sig-server for chains and groups). Carol, who has no contact at D, gets
// an update naming that server: it is asked nothing. Once carol has added
// mallory@D as a contact (the resolver named that server then), the same
// update is followed, and the group joined.
func TestGroupJoinHintOfLocalDomain(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	ctx := testCtx(t)
	sig, err := url.Parse(st.SigServerURL)
	if err != nil {
		t.Fatal(err)
	}
	var gets groupGets
	proxy := httputil.NewSingleHostReverseProxy(sig)
	mal := newPerson(t, st, "mal", 1)
	var domainURL string
	var handle string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/webfinger" {
			gets.wrap(proxy).ServeHTTP(w, r)
			return
		}
		key := mal.user.Key.String()
		jrd := handles.JRD{Subject: "acct:" + handle, Links: []handles.JRDLink{
			{Rel: handles.RelKey, Properties: map[string]*string{handles.PropKey: &key}},
			{Rel: handles.RelSigchain, Href: handles.ChainURL(domainURL, mal.user.Key)},
		}}
		w.Header().Set("Content-Type", "application/jrd+json")
		_ = json.NewEncoder(w).Encode(jrd)
	}))
	t.Cleanup(srv.Close)
	domain := srv.Listener.Addr().String()
	domainURL, handle = srv.URL, "mallory@"+domain
	strangerAs(t, st, mal.user, handle) // mal's chain claims mallory@D
	carolU := st.NewUser(t, "carol")
	carol := openClient(t, st, carolU, func(c *Config) {
		c.Client.AllowLocalDomains, c.Client.LocalDomains, c.Client.HTTPClient = true, []string{domain}, srv.Client()
	})

	name := "team@" + domain
	create, err := group.NewCreate(mal.user.Identity, mal.user.Key, name, handle, "", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	st1, err := group.Verify(ctx, [][]byte{create.Bytes()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	add, err := group.NewLink(mal.user.Identity, mal.user.Key, st1, group.TypeAdd,
		group.AddBody([]group.NewMember{{Key: carolU.Key, Handle: carolU.Handle.String(), Role: group.RoleMember}}), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	gc := group.NewClient(st.SigServerURL, nil)
	for _, l := range []*group.Link{create, add} {
		if err := gc.Append(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	update := marshalGroupUpdate(groupUpdate{Group: name, Head: add.ID(), Seqno: 2, SigServer: srv.URL})
	m := mal.devices[0]

	sendPairwise(t, m, carolU.Key, carolU.Handle.String(), KindGroupUpdate, update)
	sendPairwise(t, m, carolU.Key, carolU.Handle.String(), KindText, []byte("marker"))
	receiveUntil(t, carol, "mal's marker", func(int) bool { return carol.Stats().Received > 0 })
	if n := gets.n.Load(); n != 0 {
		t.Fatalf("carol asked the address a stranger named %d times", n)
	}
	if gs, _ := carol.Groups(ctx); len(gs) != 0 {
		t.Fatalf("carol pinned %+v", gs[0])
	}

	// Control: the resolver names that server for a contact of D.
	ct := mustAdd(t, carol, handle)
	if ct.SigServer != srv.URL {
		t.Fatalf("the contact's sig-server is %s, want %s", ct.SigServer, srv.URL)
	}
	sendPairwise(t, m, carolU.Key, carolU.Handle.String(), KindGroupUpdate, update)
	g := waitGroup(t, carol, name, func(*Group) bool { return true })
	if gets.n.Load() == 0 || g.SigServer != srv.URL || g.Invited {
		t.Fatalf("carol joined %+v after %d fetches", g, gets.n.Load())
	}
}
