package callout

import (
	"bytes"
	"encoding/base64"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// laneRig is a service that is not listening, and a server key to sign
// the requests a test hands it directly.
type laneRig struct {
	svc    *Service
	keys   *Keys
	server nkeys.KeyPair
	alice  *kez.Identity
}

func newLaneRig(t testing.TB, lim LoginLimits) *laneRig {
	t.Helper()
	keys := &Keys{
		Issuer:      fixedPair(t, nkeys.PrefixByteAccount, 1),
		XKey:        fixedPair(t, nkeys.PrefixByteCurve, 2),
		Service:     fixedPair(t, nkeys.PrefixByteUser, 3),
		Provisioner: fixedPair(t, nkeys.PrefixByteUser, 4),
	}
	alice, err := kez.FromSeed(bytes.Repeat([]byte{7}, 64))
	if err != nil {
		t.Fatal(err)
	}
	dir := &StaticDirectory{}
	dir.Set(alice.PublicKey(), Entry{Handle: "alice@kez.lat"})
	svc, err := New(Config{Keys: keys, Directory: dir, Limits: lim, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return &laneRig{svc: svc, keys: keys, server: fixedPair(t, nkeys.PrefixByteServer, 5), alice: alice}
}

// msg is the request nats-server would send for a client at host logging
// in with nkey (signing the nonce with sign, if not nil), expiring at exp.
func (r *laneRig) msg(t testing.TB, nkey, host string, sign func([]byte) ([]byte, error), exp time.Time) *nats.Msg {
	t.Helper()
	id, _ := r.server.PublicKey()
	rc := jwt.NewAuthorizationRequestClaims(r.keys.IssuerPublicKey())
	rc.Audience = requestAudience
	rc.UserNkey = r.keys.ServicePublicKey() // any user key
	rc.Server = jwt.ServerID{Name: "n", ID: id}
	rc.Expires = exp.Unix()
	rc.ClientInformation = jwt.ClientInformation{Host: host, Nonce: "kT9_Ozx3bQc", Kind: "Client"}
	rc.ConnectOptions = jwt.ConnectOptions{Nkey: nkey, SignedNonce: "AAAA"}
	if sign != nil {
		sig, err := sign([]byte(rc.ClientInformation.Nonce))
		if err != nil {
			t.Fatal(err)
		}
		rc.ConnectOptions.SignedNonce = base64.RawURLEncoding.EncodeToString(sig)
	}
	tok, err := rc.Encode(r.server)
	if err != nil {
		t.Fatal(err)
	}
	return &nats.Msg{Subject: AuthSubject, Data: []byte(tok)}
}

// TestTriageLanes: the lane a request takes, from what it claims and the
// address's record: the provisioner and known pairs first, suspects last.
func TestTriageLanes(t *testing.T) {
	rig := newLaneRig(t, LoginLimits{BackoffAfter: 2, BackoffMax: time.Second})
	s := rig.svc
	exp := time.Now().Add(2 * time.Second)
	alice := rig.alice.PublicKey().String()
	stranger := newUnregistered(t)
	lane := func(m *nats.Msg) Lane { return s.triage(m).lane }

	if got := lane(rig.msg(t, alice, "192.0.2.10", rig.alice.SignNATSNonce, exp)); got != LaneNew {
		t.Fatalf("alice's first login: lane %s, want new", got)
	}
	s.handle(rig.msg(t, alice, "192.0.2.10", rig.alice.SignNATSNonce, exp)) // granted
	if st := s.Stats(); st.Authorized != 1 {
		t.Fatalf("alice was not granted: %+v", st)
	}
	if got := lane(rig.msg(t, alice, "192.0.2.10", rig.alice.SignNATSNonce, exp)); got != LaneKnown {
		t.Fatalf("alice again from the same address: lane %s, want known", got)
	}
	if got := lane(rig.msg(t, alice, "192.0.2.11", nil, exp)); got != LaneNew {
		t.Fatalf("alice's key from another address: lane %s, want new", got)
	}
	if got := lane(rig.msg(t, rig.keys.ProvisionerPublicKey(), "192.0.2.99", nil, exp)); got != LaneKnown {
		t.Fatalf("the provisioner: lane %s, want known", got)
	}
	// Two failures make 192.0.2.66 a suspect, whatever it claims next.
	for range 2 {
		s.handle(rig.msg(t, stranger, "192.0.2.66", nil, exp))
	}
	if st := s.Stats(); st.DeniedBy[DenyUnknownKey] != 2 {
		t.Fatalf("stats %+v", st)
	}
	if got := lane(rig.msg(t, stranger, "192.0.2.66", nil, exp)); got != LaneSuspect {
		t.Fatalf("a failing address: lane %s, want suspect", got)
	}
	if got := lane(rig.msg(t, alice, "192.0.2.66", rig.alice.SignNATSNonce, exp)); got != LaneSuspect {
		t.Fatalf("alice's key from a failing address: lane %s, want suspect", got)
	}
	// Garbage cannot pick a lane.
	if got := lane(&nats.Msg{Subject: AuthSubject, Data: []byte("eyJhbGciOiJub25lIn0.eyJuYXRzIjp7fX0.")}); got != LaneNew {
		t.Fatalf("garbage: lane %s", got)
	}
}

// TestFullLaneDrops: a request that finds its lane full is dropped unread
// and counted; the other lanes still take requests.
func TestFullLaneDrops(t *testing.T) {
	rig := newLaneRig(t, LoginLimits{MaxQueued: 2})
	s := rig.svc // not listening: nothing takes from the lanes
	exp := time.Now().Add(2 * time.Second)
	stranger := newUnregistered(t)
	for range 5 {
		s.enqueue(rig.msg(t, stranger, "192.0.2.1", nil, exp))
	}
	s.enqueue(rig.msg(t, rig.keys.ProvisionerPublicKey(), "192.0.2.1", nil, exp))
	st := s.Stats()
	if st.Queued[LaneNew] != 2 || st.Queued[LaneKnown] != 1 || st.DroppedFull != 3 {
		t.Fatalf("want 2 queued in new, 1 in known, 3 dropped: %+v", st)
	}
}

// TestExpiredWhileQueuedIsDropped: a request nats-server stopped waiting
// for is dropped without any work; one that came already expired is
// answered (refused) as invalid.
func TestExpiredWhileQueuedIsDropped(t *testing.T) {
	rig := newLaneRig(t, LoginLimits{})
	s := rig.svc
	alice := rig.alice.PublicKey().String()
	r := s.triage(rig.msg(t, alice, "192.0.2.1", rig.alice.SignNATSNonce, time.Now().Add(-time.Second)))
	s.process(r) // came expired
	if st := s.Stats(); st.Malformed != 1 || st.DroppedExpired != 0 || st.Authorized != 0 {
		t.Fatalf("a request that came expired: %+v", st)
	}
	r = s.triage(rig.msg(t, alice, "192.0.2.1", rig.alice.SignNATSNonce, time.Now().Add(time.Second)))
	r.arrived = r.arrived.Add(-10 * time.Second) // it waited; now it is past its expiry
	r.peek.Exp = r.arrived.Unix() + 1
	s.process(r)
	if st := s.Stats(); st.DroppedExpired != 1 || st.Malformed != 1 || st.Authorized != 0 {
		t.Fatalf("a request that expired while queued: %+v", st)
	}
}

// TestUnknownKeyRefusedBeforeSignatureCheck: an unregistered key is
// refused as unknown whatever its signature; a registered key with a bad
// signature is refused as such.
func TestUnknownKeyRefusedBeforeSignatureCheck(t *testing.T) {
	rig := newLaneRig(t, LoginLimits{})
	s := rig.svc
	exp := time.Now().Add(2 * time.Second)
	s.handle(rig.msg(t, newUnregistered(t), "192.0.2.1", nil, exp))
	s.handle(rig.msg(t, rig.alice.PublicKey().String(), "192.0.2.1", nil, exp))
	st := s.Stats()
	if st.DeniedBy[DenyUnknownKey] != 1 || st.DeniedBy[DenyBadSignature] != 1 || st.Denied != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func newUnregistered(t testing.TB) string {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	return pub
}

// TestHeldDenialsBounded: at most MaxHeld denials are held; a denial past
// the bound is left unanswered (nats-server refuses at its timeout), and
// Close drops the held ones.
func TestHeldDenialsBounded(t *testing.T) {
	rig := newLaneRig(t, LoginLimits{MaxHeld: 2, BackoffAfter: 1, BackoffBase: time.Minute, BackoffMax: time.Minute})
	s := rig.svc
	exp := time.Now().Add(time.Hour) // leave room for the delay
	stranger := newUnregistered(t)
	ask := func(host string) {
		m := rig.msg(t, stranger, host, nil, exp)
		m.Reply = "_INBOX.nobody" // not bound to a connection: sending fails, holding does not
		s.handle(m)
	}
	hosts := []string{"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"}
	for _, h := range hosts {
		ask(h) // the first failure of each: answered at once
	}
	if st := s.Stats(); st.Delayed != 0 || st.Held != 0 || st.Denied != 4 {
		t.Fatalf("first failures: %+v", st)
	}
	for _, h := range hosts {
		ask(h) // the second: a minute's delay, if there is room
	}
	if st := s.Stats(); st.Delayed != 2 || st.Held != 2 || st.Unanswered != 2 || st.Denied != 8 {
		t.Fatalf("second failures: want 2 held and 2 unanswered: %+v", st)
	}
	s.dropHeld()
	if st := s.Stats(); st.Held != 0 {
		t.Fatalf("after Close: %+v", st)
	}
}

// BenchmarkTriage: what picking a request's lane costs (opening it and
// the unverified read) beside deciding it (a grant: the request's and
// the nonce's signatures verified, the user JWT and the response signed).
func BenchmarkTriage(b *testing.B) {
	rig := newLaneRig(b, LoginLimits{})
	m := rig.msg(b, rig.alice.PublicKey().String(), "192.0.2.1", rig.alice.SignNATSNonce, time.Now().Add(time.Hour))
	b.Run("triage", func(b *testing.B) {
		for b.Loop() {
			rig.svc.triage(m)
		}
	})
	b.Run("grant", func(b *testing.B) {
		for b.Loop() {
			rig.svc.handle(m)
		}
	})
}
