package jsstore

import (
	"context"
	"encoding/hex"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/group"
	gtest "github.com/kez-lat/kez-chat/group/storetest"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/kez-lat/kez-chat/sigchain"
)

// TestGroupContract runs the group store contract (package
// group/storetest) against the JetStream store, each handle on a
// connection of its own, as two sig-server replicas would have.
func TestGroupContract(t *testing.T) {
	srv := natstest.Run(t, natstest.JetStreamConf)
	gtest.Run(t, func(t *testing.T) (gtest.Stores, func() gtest.Stores) {
		open, _ := openFresh(t, srv.ClientURL())
		stores := func() gtest.Stores {
			s := open().(*Store)
			return gtest.Stores{Groups: s.Groups(), Chains: s}
		}
		return stores(), stores
	})
}

// TestGroupLayout checks where a group lands in the stream: its links on
// kez.v1.chain.groups.<hex name>.<seqno>, its creator's marker on
// kez.v1.chain.groupsby.<person>.<hex name>, nothing a chain's filter
// or the orphan collection takes.
func TestGroupLayout(t *testing.T) {
	ctx := context.Background()
	srv := natstest.Run(t, natstest.JetStreamConf)
	js := natstest.ConnectJetStream(t, srv.ClientURL())
	s, err := New(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	alice := gtest.Identity(t, 1)
	b := gtest.NewGroup(t, alice, "team@kez.lat", "alice@kez.lat", time.Now())
	b.Next(t, alice, group.TypeTitle, group.TitleBody("Team"))
	for _, l := range b.Links {
		if err := s.Groups().Append(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	st, err := js.Stream(ctx, DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	name := hex.EncodeToString([]byte("team@kez.lat"))
	for subj, want := range map[string][]byte{
		"kez.v1.chain.groups." + name + ".1":                               b.Links[0].Bytes(),
		"kez.v1.chain.groups." + name + ".2":                               b.Links[1].Bytes(),
		"kez.v1.chain.groupsby." + alice.PublicKey().String() + "." + name: nil,
	} {
		m, err := st.GetLastMsgForSubject(ctx, subj)
		if err != nil {
			t.Fatalf("%s: %v", subj, err)
		}
		if string(m.Data) != string(want) {
			t.Fatalf("%s holds %q", subj, m.Data)
		}
	}
	if n, err := s.CollectOrphans(ctx, time.Now().Add(time.Hour)); err != nil || n != 0 {
		t.Fatalf("the collection took %d, %v", n, err)
	}
	if _, err := s.Head(ctx, alice.PublicKey()); err != sigchain.ErrNotFound {
		t.Fatalf("the creator's chain: %v", err)
	}
	if h, err := s.Groups().Head(ctx, "team@kez.lat"); err != nil || h.Seqno != 2 {
		t.Fatalf("head after the collection: %v, %v", h, err)
	}
}
