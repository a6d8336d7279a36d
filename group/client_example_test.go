package group_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"time"

	"github.com/kez-lat/kez-chat/group"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/sigchain/sqlitestore"
	"github.com/kez-lat/kez-chat/sigchain/sqlitestore/groupstore"
)

// A sig-server keeps a group's membership chain beside its people's
// sigchains: alice, whose chain names alice@kez.lat, creates
// team@kez.lat there and adds bob; a member loads the chain and checks
// it against its pin later.
func ExampleClient() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "kez-sig")
	defer os.RemoveAll(dir)
	st, err := sqlitestore.Open(filepath.Join(dir, "sig.db"))
	if err != nil {
		panic(err)
	}
	defer st.Close()
	srv := httptest.NewServer(group.NewHandler(groupstore.New(st), st, group.WithLogger(slog.New(slog.DiscardHandler))))
	defer srv.Close()
	c := group.NewClient(srv.URL, srv.Client())

	// alice's sigchain on the sig-server names her handle.
	alice, _ := kez.FromWords("abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon art")
	now := time.Now()
	eldest, _ := sigchain.NewLink(alice, nil, sigchain.TypeEldest,
		sigchain.EldestBody(alice.PublicKey(), alice.EncryptionKey(0).PublicKey(), 0, "alice@kez.lat"), now)
	if err := st.Append(ctx, eldest); err != nil {
		panic(err)
	}

	create, _ := group.NewCreate(alice, alice.PublicKey(), "team@kez.lat", "alice@kez.lat", "Team", now)
	if err := c.Append(ctx, create); err != nil {
		panic(err)
	}
	pinned, _ := c.Load(ctx, "team@kez.lat", nil, nil)

	bob, _, _ := kez.NewIdentity()
	add, _ := group.NewLink(alice, alice.PublicKey(), pinned, group.TypeAdd,
		group.AddBody([]group.NewMember{{Key: bob.PublicKey(), Handle: "bob@kez.lat", Role: group.RoleMember}}), now)
	if err := c.Append(ctx, add); err != nil {
		panic(err)
	}
	// Anyone else's create of the name is refused.
	mallory, _, _ := kez.NewIdentity()
	squat, _ := group.NewCreate(mallory, mallory.PublicKey(), "team@kez.lat", "mallory@kez.lat", "", now)
	fmt.Println("name taken:", errors.Is(c.Append(ctx, squat), group.ErrNameTaken))

	st2, err := c.Load(ctx, "team@kez.lat", pinned, nil)
	if err != nil {
		panic(err)
	}
	fmt.Println(st2.Name(), st2.Title(), "seqno", st2.Seqno(), "epoch", st2.Epoch(), "members", len(st2.Members()))
	// Output:
	// name taken: true
	// team@kez.lat Team seqno 2 epoch 2 members 2
}
