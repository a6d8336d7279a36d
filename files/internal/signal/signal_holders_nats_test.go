package signal_test

import (
	"context"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/files/format"
	"github.com/kez-lat/kez-chat/files/internal/signal"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/nats-io/nats.go"
)

func testCID(t testing.TB, b byte) cid.Cid {
	tr, err := format.HashReaderAt(readerOf([]byte{b}), 1)
	if err != nil {
		t.Fatal(err)
	}
	return tr.CID()
}

type readerOf []byte

func (r readerOf) ReadAt(p []byte, off int64) (int, error) { return copy(p, r[off:]), nil }

// Over a real broker: a holder's have reaches the owner's handler
// verified; a have whose holder field names someone else than the signer
// arrives refused; the fetcher's holders request is answered with what
// the owner keeps, and the fetcher takes the record.
func TestHaveAndHoldersOverNATS(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice, bob, carol, mallory := st.NewUser(t, "alice"), st.NewUser(t, "bob"), st.NewUser(t, "carol"), st.NewUser(t, "mallory")
	anc, bnc, cnc, mnc := login(t, st, alice), login(t, st, bob), login(t, st, carol), login(t, st, mallory)
	c := testCID(t, 0)
	haves := make(chan *signal.Have, 4)
	refused := make(chan error, 4)
	var kept [][]byte
	keptC := make(chan struct{})
	sub, err := signal.AnswerLocates(anc, alice.Identity, func() []ma.Multiaddr { return addrs(t, "/ip4/127.0.0.1/tcp/1") }, signal.AnswerOptions{
		OnHave: func(h *signal.Have, err error) {
			if err != nil {
				refused <- err
				return
			}
			haves <- h
		},
		Holders: func(got cid.Cid) [][]byte {
			<-keptC
			if !got.Equals(c) {
				return nil
			}
			return kept
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	anc.Flush()

	holderAddrs := addrs(t, "/ip4/127.0.0.1/tcp/4242")
	if err := signal.SendHave(cnc, carol.Identity, alice.Key, c, holderAddrs, time.Now()); err != nil {
		t.Fatal(err)
	}
	h := <-haves
	if h.Holder != carol.Key || !h.CID.Equals(c) || h.Addrs[0].String() != "/ip4/127.0.0.1/tcp/4242" {
		t.Fatalf("the owner got %+v", h)
	}
	// mallory claims carol's key.
	forged := &signal.Have{Owner: alice.Key, Holder: mallory.Key, Time: time.Now(), CID: c, Addrs: holderAddrs}
	b, err := signal.SignHave(mallory.Identity, forged)
	if err != nil {
		t.Fatal(err)
	}
	copy(b[38:70], carol.Key[:])
	mnc.Publish(signal.SignalSubjectPrefix+alice.Key.String(), b)
	if err := <-refused; !errors.Is(err, kez.ErrBadSignature) {
		t.Fatalf("a forged have: %v", err)
	}
	kept = [][]byte{h.Bytes()}
	close(keptC)

	got, err := signal.AskHolders(context.Background(), bnc, bob.Key, alice.Key, c, signal.HoldersOptions{})
	if err != nil || len(got) != 1 || got[0].Holder != carol.Key {
		t.Fatalf("AskHolders = %v, %v", got, err)
	}
	// Nobody listening: no holders, no error, at once.
	got, err = signal.AskHolders(context.Background(), bnc, bob.Key, mallory.Key, c, signal.HoldersOptions{Timeout: time.Minute})
	if err != nil || got != nil {
		t.Fatalf("AskHolders of nobody = %v, %v", got, err)
	}
}

// Whatever else arrives on the fetcher's reply subject is ignored: junk,
// an answer to another request, one signed by another key; of the
// owner's answer only the records that pass CheckHolder are taken.
func TestAskHoldersIgnoresAllButTheOwnersAnswer(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice, bob, carol, mallory := st.NewUser(t, "alice"), st.NewUser(t, "bob"), st.NewUser(t, "carol"), st.NewUser(t, "mallory")
	anc, bnc := login(t, st, alice), login(t, st, bob)
	c, other := testCID(t, 0), testCID(t, 1)
	have := func(id *kez.Identity, owner kez.PublicKey, c cid.Cid) []byte {
		b, err := signal.SignHave(id, &signal.Have{Owner: owner, Holder: id.PublicKey(), Time: time.Now(), CID: c, Addrs: addrs(t, "/ip4/127.0.0.1/tcp/9")})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	sub, err := anc.Subscribe(signal.SignalSubjectPrefix+alice.Key.String(), func(m *nats.Msg) {
		req, err := signal.ParseHoldersRequest(m.Data)
		if err != nil {
			t.Error(err)
			return
		}
		now := time.Now()
		m.Respond([]byte("junk"))
		o := *req
		rand.Read(o.Nonce[:])
		a1, _ := signal.SignHoldersAnswer(alice.Identity, &o, [][]byte{have(mallory.Identity, alice.Key, c)}, now)
		m.Respond(a1)
		f := *req
		f.Owner = mallory.Key
		a2, _ := signal.SignHoldersAnswer(mallory.Identity, &f, [][]byte{have(mallory.Identity, alice.Key, c)}, now)
		copy(a2[6:38], alice.Key[:])
		m.Respond(a2)
		ok, err := signal.SignHoldersAnswer(alice.Identity, req, [][]byte{
			have(mallory.Identity, alice.Key, other), have(alice.Identity, alice.Key, c),
			have(bob.Identity, alice.Key, c), have(mallory.Identity, carol.Key, c), have(carol.Identity, alice.Key, c),
		}, now)
		if err != nil {
			t.Error(err)
		}
		m.Respond(ok)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	anc.Flush()
	got, err := signal.AskHolders(context.Background(), bnc, bob.Key, alice.Key, c, signal.HoldersOptions{Timeout: time.Minute})
	if err != nil || len(got) != 1 || got[0].Holder != carol.Key {
		t.Fatalf("AskHolders = %v, %v", got, err)
	}
}
