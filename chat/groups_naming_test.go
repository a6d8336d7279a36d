package chat

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
)

// awayTransport fails every request while away is set, as a home server
// that does not answer; otherwise the real server answers.
type awayTransport struct{ away *atomic.Bool }

func (t awayTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if t.away.Load() {
		return nil, errors.New("the home server is away")
	}
	return http.DefaultTransport.RoundTrip(r)
}

// TestGroupSenderNamedOnceResolved: carol, who is not alice's contact,
// stores alice's group message while her home server cannot resolve
// alice's handle, so it is stored by key; once the server answers again,
// her inbox and the group's history show the handle alice's chain
// confirms, not the key for ever.
func TestGroupSenderNamedOnceResolved(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice := newPerson(t, st, "alice", 1)
	var away atomic.Bool
	carol := newPerson(t, st, "carol", 1, func(cfg *Config) {
		r := st.Resolver()
		r.HTTPClient = &http.Client{Transport: awayTransport{&away}, Timeout: r.HTTPClient.Timeout}
		cfg.Client.Resolver = r
	})
	a, c := alice.devices[0], carol.devices[0]
	ctx := testCtx(t)
	name := "team@" + st.Domain

	if _, err := a.CreateGroup(ctx, "team", ""); err != nil {
		t.Fatal(err)
	}
	if err := a.AddGroupMembers(ctx, "team", "carol"); err != nil {
		t.Fatal(err)
	}
	waitGroup(t, c, name, func(g *Group) bool { return len(g.Members) == 2 })
	// alice is no contact of carol's: the group is an invitation until
	// carol accepts it (docs/spec/chat.md §10.9).
	if err := c.AcceptGroup(ctx, name); err != nil {
		t.Fatal(err)
	}
	away.Store(true)
	s := mustGroupSend(t, a, "team", "hello team")
	var e *Entry
	receiveUntil(t, c, "alice's group message", func(int) bool {
		var err error
		e, err = c.Message(ctx, alice.user.Key, s.ID)
		return err == nil
	})
	if e.PeerHandle != "" {
		t.Fatalf("stored with the handle %q although it could not be checked", e.PeerHandle)
	}

	away.Store(false)
	want := "alice@" + st.Domain
	var got *Entry
	for _, x := range mustInbox(t, c, false) {
		if x.ID == s.ID {
			got = x
		}
	}
	if got == nil || got.PeerHandle != want {
		t.Fatalf("carol's inbox shows %+v, want the sender %s", got, want)
	}
	es, err := c.GroupHistory(ctx, name, 0)
	if err != nil || len(es) != 1 || es[0].PeerHandle != want {
		t.Fatalf("carol's group history: %+v %v", es, err)
	}
}

// hangTransport sends every request to hang's server while on is set
// (a home server that takes the connection and never answers), else to
// the real one; away fails them at once.
type hangTransport struct {
	on, away *atomic.Bool
	hang     *url.URL
}

func (t hangTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	switch {
	case t.away.Load():
		return nil, errors.New("the home server is away")
	case t.on.Load():
		r = r.Clone(r.Context())
		r.URL.Scheme, r.URL.Host, r.Host = t.hang.Scheme, t.hang.Host, ""
	}
	return http.DefaultTransport.RoundTrip(r)
}

// TestPageDoesNotWaitForSenderNames: carol stored alice's group message
// by key (her home server was away); when carol reads the group a page at
// a time, with the server that names alice hanging (it answers once the
// test ends), Page returns at once from chat.db, and the naming goes on
// in the background.
func TestPageDoesNotWaitForSenderNames(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice := newPerson(t, st, "alice", 1)
	reached, release := make(chan struct{}, 1), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case reached <- struct{}{}:
		default:
		}
		<-release
		http.Error(w, "too late", http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs before srv.Close
	hang, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	var on, away atomic.Bool
	carol := newPerson(t, st, "carol", 1, func(cfg *Config) {
		r := st.Resolver()
		r.HTTPClient = &http.Client{Transport: hangTransport{&on, &away, hang}}
		cfg.Client.Resolver = r
		cfg.RefreshTimeout = time.Hour // only the test's end ends a resolve
	})
	a, c := alice.devices[0], carol.devices[0]
	ctx := testCtx(t)
	name := "team@" + st.Domain
	if _, err := a.CreateGroup(ctx, "team", ""); err != nil {
		t.Fatal(err)
	}
	if err := a.AddGroupMembers(ctx, "team", "carol"); err != nil {
		t.Fatal(err)
	}
	waitGroup(t, c, name, func(g *Group) bool { return len(g.Members) == 2 })
	if err := c.AcceptGroup(ctx, name); err != nil {
		t.Fatal(err)
	}
	away.Store(true)
	s := mustGroupSend(t, a, "team", "hello team")
	receiveUntil(t, c, "alice's group message", func(int) bool {
		e, err := c.Message(ctx, alice.user.Key, s.ID)
		return err == nil && e.PeerHandle == ""
	})
	on.Store(true)
	away.Store(false)

	type result struct {
		es  []*Entry
		err error
	}
	paged := make(chan result, 1)
	go func() {
		es, err := c.Page(ctx, PageQuery{Group: name})
		paged <- result{es, err}
	}()
	select {
	case r := <-paged:
		if r.err != nil || len(r.es) != 1 || r.es[0].ID != s.ID {
			t.Fatalf("the page: %+v, %v", r.es, r.err)
		}
	case <-ctx.Done():
		t.Fatal("Page waited for the server naming the sender, which answers only once the test ends")
	}
	// The naming went on in the background, to the hanging server.
	select {
	case <-reached:
	case <-ctx.Done():
		t.Fatal("the sender was not looked up in the background")
	}
}
