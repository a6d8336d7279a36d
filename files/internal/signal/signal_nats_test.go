package signal_test

import (
	"context"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/files/internal/signal"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/natsconn"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/nats-io/nats.go"
)

// login connects to the stack's NATS as u, as a KEZ client does.
func login(t testing.TB, st *stacktest.Stack, u *stacktest.User) *nats.Conn {
	t.Helper()
	nc, err := natsconn.Connect(context.Background(), st.NATSURL, u.Identity)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func addrs(t testing.TB, ss ...string) []ma.Multiaddr {
	var out []ma.Multiaddr
	for _, s := range ss {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

// Whatever else arrives on the fetcher's reply subject (junk, answers to
// other requests, answers meant for someone else, answers signed by another
// key) is ignored; the owner's signed answer is taken.
func TestLocateIgnoresAllButTheOwnersAnswer(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice, bob, carol := st.NewUser(t, "alice"), st.NewUser(t, "bob"), st.NewUser(t, "carol")
	anc, bnc := login(t, st, alice), login(t, st, bob)
	ctx := context.Background()
	good := addrs(t, "/ip4/127.0.0.1/tcp/4001")
	bad := addrs(t, "/ip4/127.0.0.1/tcp/6666")

	sub, err := anc.Subscribe(signal.SignalSubjectPrefix+alice.Key.String(), func(m *nats.Msg) {
		req, err := signal.ParseLocateRequest(m.Data)
		if err != nil {
			t.Error(err)
			return
		}
		now := time.Now()
		m.Respond([]byte("junk"))
		other := *req
		rand.Read(other.Nonce[:])
		replayed, _ := signal.SignLocateAnswer(alice.Identity, &other, bad, now)
		m.Respond(replayed)
		redirected := *req
		redirected.Requester = carol.Key
		r2, _ := signal.SignLocateAnswer(alice.Identity, &redirected, bad, now)
		m.Respond(r2)
		forged := *req
		forged.Owner = carol.Key
		r3, _ := signal.SignLocateAnswer(carol.Identity, &forged, bad, now)
		m.Respond(r3)
		ok, err := signal.SignLocateAnswer(alice.Identity, req, good, now)
		if err != nil {
			t.Error(err)
		}
		m.Respond(ok)
	})
	if err != nil {
		t.Fatal(err)
	}
	anc.Flush()
	info, err := signal.Locate(ctx, bnc, bob.Key, alice.Key, signal.LocateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if info.ID != alice.Key.PeerID() || len(info.Addrs) != 1 || !info.Addrs[0].Equal(good[0]) {
		t.Fatalf("located %v", info)
	}
	sub.Unsubscribe()

	// An owner's subject where only junk comes back: offline, after the
	// per-request timeout.
	sub, _ = anc.Subscribe(signal.SignalSubjectPrefix+alice.Key.String(), func(m *nats.Msg) { m.Respond([]byte("junk")) })
	defer sub.Unsubscribe()
	anc.Flush()
	_, err = signal.Locate(ctx, bnc, bob.Key, alice.Key, signal.LocateOptions{Timeout: 200 * time.Millisecond, OwnerName: "alice@kez.test"})
	if !errors.Is(err, signal.ErrOwnerOffline) {
		t.Fatalf("junk only: %v", err)
	}
}

// The owner answers only well-formed, fresh requests for its own key whose
// reply subject is the requester's own inbox.
func TestAnswerLocatesIgnoresBadRequests(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice, bob, carol := st.NewUser(t, "alice"), st.NewUser(t, "bob"), st.NewUser(t, "carol")
	anc, bnc := login(t, st, alice), login(t, st, bob)
	listen := addrs(t, "/ip4/127.0.0.1/tcp/4001", "/ip4/0.0.0.0/tcp/4002")
	sub, err := signal.AnswerLocates(anc, alice.Identity, func() []ma.Multiaddr { return listen }, signal.AnswerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	anc.Flush()

	subject := signal.SignalSubjectPrefix + alice.Key.String()
	ask := func(reply string, req signal.LocateRequest, raw []byte) *nats.Subscription {
		t.Helper()
		s, err := bnc.SubscribeSync(reply)
		if err != nil {
			t.Fatal(err)
		}
		if raw == nil {
			raw, _ = req.Marshal()
		}
		if err := bnc.PublishMsg(&nats.Msg{Subject: subject, Reply: reply, Data: raw}); err != nil {
			t.Fatal(err)
		}
		return s
	}
	now := time.Now()
	valid := signal.LocateRequest{Owner: alice.Key, Requester: bob.Key, Time: now}
	rand.Read(valid.Nonce[:])
	inbox := "_INBOX." + bob.Key.String() + "."

	asCarol := valid
	asCarol.Requester = carol.Key // but the reply goes to bob's inbox
	stale := valid
	stale.Time = now.Add(-signal.MaxSignalSkew - time.Minute)
	otherOwner := valid
	otherOwner.Owner = bob.Key
	ignored := []*nats.Subscription{
		ask(inbox+"carol", asCarol, nil),
		ask(inbox+"stale", stale, nil),
		ask(inbox+"owner", otherOwner, nil),
		ask(inbox+"junk", valid, []byte("not a request")),
	}
	answered := ask(inbox+"good", valid, nil)
	m, err := answered.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	a, err := signal.ParseLocateAnswer(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Verify(alice.Key, bob.Key, valid.Nonce, time.Now()); err != nil {
		t.Fatal(err)
	}
	if len(a.Addrs) != 1 || !a.Addrs[0].Equal(listen[0]) {
		t.Fatalf("announced %v (the unspecified address must be left out)", a.Addrs)
	}
	// The owner answers in order on one connection, so anything it sent to
	// the earlier requests is already queued.
	for i, s := range ignored {
		if n, _, _ := s.Pending(); n != 0 {
			t.Errorf("bad request %d was answered", i)
		}
	}
}

func TestOfflineErrorWording(t *testing.T) {
	err := error(&signal.OfflineError{Owner: "alice@kez.lat"})
	if err.Error() != "files: alice@kez.lat is offline" || !errors.Is(err, signal.ErrOwnerOffline) {
		t.Fatalf("%v", err)
	}
}

// BenchmarkLocate is one signalling round trip through the real broker and
// auth callout (request, signed answer, verification) beside the raw NATS
// request/reply of the same size on the same connections.
func BenchmarkLocate(b *testing.B) {
	st := stacktest.Start(b, stacktest.Options{})
	alice, bob := st.NewUser(b, "alice"), st.NewUser(b, "bob")
	anc, bnc := login(b, st, alice), login(b, st, bob)
	ctx := context.Background()
	listen := addrs(b, "/ip4/127.0.0.1/tcp/4001", "/ip4/192.168.1.2/tcp/4001", "/ip4/127.0.0.1/udp/4001/quic-v1")

	b.Run("raw_request_reply", func(b *testing.B) {
		answer := make([]byte, 200)
		sub, _ := anc.Subscribe(signal.SignalSubjectPrefix+alice.Key.String(), func(m *nats.Msg) { m.Respond(answer) })
		defer sub.Unsubscribe()
		anc.Flush()
		req := make([]byte, signal.LocateRequestSize)
		for b.Loop() {
			if _, err := bnc.Request(signal.SignalSubjectPrefix+alice.Key.String(), req, 5*time.Second); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("locate", func(b *testing.B) {
		sub, err := signal.AnswerLocates(anc, alice.Identity, func() []ma.Multiaddr { return listen }, signal.AnswerOptions{})
		if err != nil {
			b.Fatal(err)
		}
		defer sub.Unsubscribe()
		anc.Flush()
		for b.Loop() {
			if _, err := signal.Locate(ctx, bnc, bob.Key, alice.Key, signal.LocateOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
