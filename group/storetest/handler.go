package storetest

import (
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/group"
	"github.com/kez-lat/kez-chat/sigchain"
	sigtest "github.com/kez-lat/kez-chat/sigchain/storetest"
)

// Server is a group API over a test's stores, and a client of it.
type Server struct {
	Handler *group.Handler
	Client  *group.Client
	URL     string
}

// StartServer serves [group.NewHandler] over s with opts on a real HTTP
// server, stopped when the test ends.
func StartServer(t testing.TB, s Stores, opts ...group.HandlerOption) *Server {
	t.Helper()
	opts = append([]group.HandlerOption{group.WithLogger(slog.New(slog.DiscardHandler))}, opts...)
	h := group.NewHandler(s.Groups, s.Chains, opts...)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &Server{Handler: h, Client: group.NewClient(srv.URL, srv.Client()), URL: srv.URL}
}

// StoreChain appends p's links to chains, as the sig-server's chain API
// would have after verifying them.
func StoreChain(t testing.TB, chains sigchain.Store, links ...*sigchain.Link) {
	t.Helper()
	for _, l := range links {
		if err := chains.Append(context.Background(), l); err != nil {
			t.Fatalf("storing link %d of %s: %v", l.Seqno(), l.Key(), err)
		}
	}
}

// testHandler drives the group API over the stores: a create, its
// replay, a squatter of the name, an add, a forked append, a load, and
// the groups-per-key cap.
func testHandler(t *testing.T, open Open) {
	ctx := context.Background()
	s, _ := open(t)
	now := time.Now()
	alice, bob, mallory := Identity(t, 1), Identity(t, 2), Identity(t, 3)
	StoreChain(t, s.Chains, sigtest.NewPerson(t, alice, "alice@kez.lat", now).Links...)
	StoreChain(t, s.Chains, sigtest.NewPerson(t, mallory, "mallory@kez.lat", now).Links...)
	limits := group.NoLimits()
	limits.GroupsPerKey = 2
	srv := StartServer(t, s, group.WithLimits(limits))
	c := srv.Client

	b := NewGroup(t, alice, "team@kez.lat", "alice@kez.lat", now)
	if err := c.Append(ctx, b.Links[0]); err != nil {
		t.Fatal(err)
	}
	if err := c.Append(ctx, b.Links[0]); err != nil {
		t.Fatalf("the identical create again: %v", err)
	}
	squat := NewGroup(t, mallory, "team@kez.lat", "mallory@kez.lat", now)
	if err := c.Append(ctx, squat.Links[0]); !errors.Is(err, group.ErrNameTaken) {
		t.Fatalf("a second create of the name: %v", err)
	}
	add := b.Add(t, alice, bob)
	if err := c.Append(ctx, add); err != nil {
		t.Fatal(err)
	}
	fork := NewGroup(t, alice, "team@kez.lat", "alice@kez.lat", now)
	fork.Next(t, alice, group.TypeTitle, group.TitleBody("forked"))
	var ce *group.ConflictError
	if err := c.Append(ctx, fork.Links[1]); !errors.As(err, &ce) || ce.Head.Seqno != 2 || !ce.Head.ID.Equals(add.ID()) {
		t.Fatalf("a forked append: %v", err)
	}
	st, err := c.Load(ctx, "team@kez.lat", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Seqno() != 2 || len(st.Members()) != 2 || st.Owner() != alice.PublicKey() {
		t.Fatalf("loaded seqno %d, %d members, owner %s", st.Seqno(), len(st.Members()), st.Owner())
	}
	if err := c.Append(ctx, NewGroup(t, alice, "second@kez.lat", "alice@kez.lat", now).Links[0]); err != nil {
		t.Fatal(err)
	}
	third := NewGroup(t, alice, "third@kez.lat", "alice@kez.lat", now)
	if err := c.Append(ctx, third.Links[0]); !errors.Is(err, group.ErrTooManyGroups) {
		t.Fatalf("a third group over a cap of 2: %v", err)
	}
	if n, err := s.Groups.CreatedBy(ctx, alice.PublicKey()); err != nil || n != 2 {
		t.Fatalf("alice created %d, %v", n, err)
	}
	if _, _, err := c.Fetch(ctx, "third@kez.lat", 0); !errors.Is(err, group.ErrNotFound) {
		t.Fatalf("the refused group: %v", err)
	}
	stats := srv.Handler.Stats()
	if stats.Stored != 3 || stats.Refused[group.ReasonNameTaken] != 1 || stats.Refused[group.ReasonConflict] != 1 || stats.Refused[group.ReasonGroupsPerKey] != 1 {
		t.Fatalf("stats %+v", stats)
	}
}
