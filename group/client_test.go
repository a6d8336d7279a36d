package group_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/group"
	gtest "github.com/kez-lat/kez-chat/group/storetest"
	"github.com/kez-lat/kez-chat/sigchain/sqlitestore"
	"github.com/kez-lat/kez-chat/sigchain/sqlitestore/groupstore"
	sigtest "github.com/kez-lat/kez-chat/sigchain/storetest"
)

// server is a sig-server's group API over a fresh SQLite file holding
// the chain of alice (alice@kez.lat).
func server(t *testing.T, alice *sigtest.Person) *gtest.Server {
	t.Helper()
	st, err := sqlitestore.Open(filepath.Join(t.TempDir(), "sig.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	gtest.StoreChain(t, st, alice.Links...)
	return gtest.StartServer(t, gtest.Stores{Groups: groupstore.New(st), Chains: st}, group.WithLimits(group.NoLimits()), group.WithMaxLinksPerResponse(2))
}

// TestClientLoadPins: Load verifies a whole chain, then only what
// follows a pin; a server showing a shorter chain, none, or another link
// at the pinned seqno is caught as a rollback or a fork.
func TestClientLoadPins(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	alice := sigtest.NewPerson(t, gtest.Identity(t, 1), "alice@kez.lat", now)
	b := gtest.NewGroup(t, alice.ID, "team@kez.lat", "alice@kez.lat", now)
	for i := range 4 {
		b.Next(t, alice.ID, group.TypeTitle, group.TitleBody(fmt.Sprint(i)))
	}
	good := server(t, alice)
	for _, l := range b.Links[:3] {
		if err := good.Client.Append(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	pinned, err := good.Client.Load(ctx, "team@kez.lat", nil, nil)
	if err != nil || pinned.Seqno() != 3 || !pinned.Head().Equals(b.Links[2].ID()) {
		t.Fatalf("first load: %v", err)
	}
	if st, err := good.Client.Load(ctx, "team@kez.lat", pinned, nil); err != nil || st.Seqno() != 3 {
		t.Fatalf("load at the pin: %v", err)
	}
	for _, l := range b.Links[3:] {
		if err := good.Client.Append(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	st, err := good.Client.Load(ctx, "team@kez.lat", pinned, nil)
	if err != nil || st.Seqno() != 5 || st.Title() != "3" {
		t.Fatalf("load after the pin: %v", err)
	}
	if _, err := good.Client.Load(ctx, "other@kez.lat", pinned, nil); err == nil {
		t.Fatal("a pin of another group was taken")
	}

	short := server(t, alice)
	for _, l := range b.Links[:2] {
		if err := short.Client.Append(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := short.Client.Load(ctx, "team@kez.lat", pinned, nil); !errors.Is(err, group.ErrRollback) {
		t.Fatalf("a shorter chain: %v", err)
	}
	if _, err := server(t, alice).Client.Load(ctx, "team@kez.lat", pinned, nil); !errors.Is(err, group.ErrRollback) {
		t.Fatalf("no chain: %v", err)
	}
	forked := server(t, alice)
	f := gtest.NewGroup(t, alice.ID, "team@kez.lat", "alice@kez.lat", now)
	f.Next(t, alice.ID, group.TypeTitle, group.TitleBody("0"))
	f.Next(t, alice.ID, group.TypeTitle, group.TitleBody("forked"))
	f.Next(t, alice.ID, group.TypeTitle, group.TitleBody("on"))
	for _, l := range f.Links {
		if err := forked.Client.Append(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := forked.Client.Load(ctx, "team@kez.lat", pinned, nil); !errors.Is(err, group.ErrFork) {
		t.Fatalf("another link at the pinned seqno: %v", err)
	}
}

// TestClientHostileServer: a sig-server that answers with links of
// another group, out of order, past its head, or a head that is not its
// last link, gets ErrBadAnswer; one that answers junk or nothing gets
// an error, never a state.
func TestClientHostileServer(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	alice := gtest.Identity(t, 1)
	team := gtest.NewGroup(t, alice, "team@kez.lat", "alice@kez.lat", now)
	team.Next(t, alice, group.TypeTitle, group.TitleBody("t"))
	other := gtest.NewGroup(t, alice, "other@kez.lat", "alice@kez.lat", now)
	l1, l2 := string(team.Links[0].Bytes()), string(team.Links[1].Bytes())
	head := func(l *group.Link) string { return fmt.Sprintf(`{"seqno":%d,"id":"%s"}`, l.Seqno(), l.ID()) }
	for _, c := range []struct {
		what, answer string
		want         error
	}{
		{"another group's link", `{"links":[` + string(other.Links[0].Bytes()) + `],"head":` + head(other.Links[0]) + `}`, group.ErrBadAnswer},
		{"links out of order", `{"links":[` + l2 + `,` + l1 + `],"head":` + head(team.Links[1]) + `}`, group.ErrBadAnswer},
		{"a link past the head", `{"links":[` + l1 + `,` + l2 + `],"head":` + head(team.Links[0]) + `}`, group.ErrBadAnswer},
		{"a head that is not the last link", `{"links":[` + l1 + `,` + l2 + `],"head":{"seqno":2,"id":"` + team.Links[0].ID().String() + `"}}`, group.ErrBadAnswer},
		{"a bad head", `{"links":[],"head":{"seqno":2,"id":"nope"}}`, group.ErrBadAnswer},
		{"a tampered link", `{"links":[` + strings.Replace(l1, `"title":""`, `"title":"x"`, 1) + `],"head":` + head(team.Links[0]) + `}`, group.ErrBadAnswer},
		{"junk", `junk`, group.ErrBadAnswer},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(c.answer))
		}))
		_, err := group.NewClient(srv.URL, srv.Client()).Load(ctx, "team@kez.lat", nil, nil)
		srv.Close()
		if !errors.Is(err, c.want) {
			t.Fatalf("%s: %v", c.what, err)
		}
	}
	// A server that stops below its head withholds links.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"links":[],"head":{"seqno":9,"id":"` + team.Links[1].ID().String() + `"}}`))
	}))
	defer srv.Close()
	if _, _, err := group.NewClient(srv.URL, srv.Client()).Fetch(ctx, "team@kez.lat", 0); !errors.Is(err, group.ErrBadAnswer) {
		t.Fatalf("an empty page below the head: %v", err)
	}
	gone := httptest.NewServer(http.NotFoundHandler())
	defer gone.Close()
	if _, _, err := group.NewClient(gone.URL, gone.Client()).Fetch(ctx, "team@kez.lat", 0); !errors.Is(err, group.ErrNotFound) {
		t.Fatalf("a server without the API: %v", err)
	}
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer down.Close()
	if err := group.NewClient(down.URL, down.Client()).Append(ctx, team.Links[0]); !errors.Is(err, group.ErrUnreachable) {
		t.Fatalf("a 503: %v", err)
	}
}
