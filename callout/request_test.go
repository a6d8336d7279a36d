package callout_test

import (
	"encoding/base64"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// fakeServer signs authorization requests the way nats-server does.
type fakeServer struct {
	kp   nkeys.KeyPair
	id   string
	xkp  nkeys.KeyPair
	xpub string
}

func newFakeServer(t testing.TB) *fakeServer {
	t.Helper()
	kp, err := nkeys.CreateServer()
	if err != nil {
		t.Fatal(err)
	}
	xkp, err := nkeys.CreateCurveKeys()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := kp.PublicKey()
	xpub, _ := xkp.PublicKey()
	return &fakeServer{kp: kp, id: id, xkp: xkp, xpub: xpub}
}

const testNonce = "kT9_Ozx3bQc"

// request builds a request from id to the callout with keys k; mutate
// edits the claims before signing.
func (fs *fakeServer) request(t testing.TB, k *callout.Keys, id *kez.Identity, mutate func(*jwt.AuthorizationRequestClaims)) string {
	t.Helper()
	ukp, _ := nkeys.CreateUser()
	upub, _ := ukp.PublicKey()
	rc := jwt.NewAuthorizationRequestClaims(k.IssuerPublicKey())
	rc.Audience = "nats-authorization-request"
	rc.UserNkey = upub
	rc.Server = jwt.ServerID{Name: "fake", ID: fs.id, XKey: fs.xpub}
	rc.Expires = time.Now().Add(2 * time.Second).Unix()
	rc.ClientInformation = jwt.ClientInformation{Host: "127.0.0.1", ID: 7, Name: "kez-chat", Kind: "Client", Type: "nats", Nonce: testNonce}
	if id != nil {
		sig, err := id.SignNATSNonce([]byte(testNonce))
		if err != nil {
			t.Fatal(err)
		}
		rc.ConnectOptions = jwt.ConnectOptions{Nkey: id.PublicKey().String(), SignedNonce: base64.RawURLEncoding.EncodeToString(sig), Protocol: 1}
	}
	if mutate != nil {
		mutate(rc)
	}
	tok, err := rc.Encode(fs.kp)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// seal seals a request to the callout's xkey, as the server does.
func (fs *fakeServer) seal(t testing.TB, k *callout.Keys, tok string) []byte {
	t.Helper()
	b, err := fs.xkp.Seal([]byte(tok), k.XKeyPublicKey())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ask sends a raw request as the service user and returns the answer:
// the decoded response claims, or nil for an empty (denying) reply.
func (fs *fakeServer) ask(t *testing.T, s *stack, nc *nats.Conn, data []byte, header nats.Header) *jwt.AuthorizationResponseClaims {
	t.Helper()
	m, err := nc.RequestMsg(&nats.Msg{Subject: callout.AuthSubject, Data: data, Header: header}, 5*time.Second)
	if err != nil {
		t.Fatalf("no answer: %v\n%s", err, s.log)
	}
	if len(m.Data) == 0 {
		return nil
	}
	body := m.Data
	if header.Get(callout.ServerXKeyHeader) != "" {
		if body, err = fs.xkp.Open(m.Data, s.keys.XKeyPublicKey()); err != nil {
			t.Fatalf("cannot open the sealed response: %v", err)
		}
	}
	rs, err := jwt.DecodeAuthorizationResponseClaims(string(body))
	if err != nil {
		t.Fatalf("response: %v", err)
	}
	if rs.Issuer != s.keys.IssuerPublicKey() || rs.Audience != fs.id {
		t.Fatalf("response from %s to %s", rs.Issuer, rs.Audience)
	}
	return rs
}

// bareStack runs a service on a server without the callout configured, so
// a test can publish its own requests on the auth subject (nats-server
// forbids that to every user of the callout account).
func bareStack(t *testing.T, cfg callout.Config) *stack {
	t.Helper()
	keys, err := callout.GenerateKeys()
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{t: t, keys: keys, dir: &callout.StaticDirectory{}, srv: natstest.Run(t, ""), log: &syncBuffer{}}
	s.cfg = cfg
	s.cfg.Keys, s.cfg.Directory = keys, s.dir
	s.cfg.Logger = slog.New(slog.NewTextHandler(s.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	svc, err := callout.New(s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(s.srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if err := svc.Listen(nc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	s.svc = svc
	return s
}

// TestMalformedRequests feeds a running service hostile requests: each is
// refused (an empty reply, which nats-server reads as a denial, when the
// sender cannot be identified; a signed denial otherwise), nothing
// panics, and a good request is still granted afterwards.
func TestMalformedRequests(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s := bareStack(t, callout.Config{TTL: 3 * time.Minute, Now: func() time.Time { return now }})
	alice := s.user("alice@kez.lat")
	mallory := newIdentity(t)
	fs := newFakeServer(t)
	nc, err := nats.Connect(s.srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sealed := nats.Header{callout.ServerXKeyHeader: []string{fs.xpub}}
	acct, _ := nkeys.CreateAccount()

	empty := map[string]struct {
		data []byte
		hdr  nats.Header
	}{
		"garbage":        {[]byte("hello"), nil},
		"empty":          {nil, nil},
		"oversized":      {[]byte(strings.Repeat("eyJ", callout.MaxRequestSize)), nil},
		"bad xkey":       {[]byte("x"), nats.Header{callout.ServerXKeyHeader: []string{"nonsense"}}},
		"wrong seal":     {[]byte("not sealed at all"), sealed},
		"plain but hdr":  {[]byte(fs.request(t, s.keys, alice, nil)), sealed},
		"not a request":  {[]byte(mustUserJWT(t, acct)), nil},
		"account signed": {[]byte(signAsAccount(t, s.keys, acct)), nil},
		"id mismatch": {[]byte(fs.request(t, s.keys, alice, func(rc *jwt.AuthorizationRequestClaims) {
			rc.Server.ID = newFakeServer(t).id
		})), nil},
		"bad user nkey": {[]byte(fs.request(t, s.keys, alice, func(rc *jwt.AuthorizationRequestClaims) {
			rc.UserNkey = "UNOTAKEY"
		})), nil},
	}
	for name, c := range empty {
		if rs := fs.ask(t, s, nc, c.data, c.hdr); rs != nil {
			t.Errorf("%s: answered %+v, want an empty reply", name, rs.AuthorizationResponse)
		}
	}

	denied := map[string]struct {
		tok    string
		sealed bool
	}{
		"wrong audience": {fs.request(t, s.keys, alice, func(rc *jwt.AuthorizationRequestClaims) { rc.Audience = "someone" }), false},
		"other issuer":   {fs.request(t, s.keys, alice, func(rc *jwt.AuthorizationRequestClaims) { rc.Subject = mustPub(acct) }), false},
		"expired":        {fs.request(t, s.keys, alice, func(rc *jwt.AuthorizationRequestClaims) { rc.Expires = time.Now().Add(-time.Minute).Unix() }), false},
		"xkey mismatch":  {fs.request(t, s.keys, alice, func(rc *jwt.AuthorizationRequestClaims) { rc.Server.XKey = newFakeServer(t).xpub }), true},
		"no nkey":        {fs.request(t, s.keys, nil, nil), true},
		"unregistered":   {fs.request(t, s.keys, mallory, nil), true},
		"forged nonce": {fs.request(t, s.keys, alice, func(rc *jwt.AuthorizationRequestClaims) {
			sig, _ := mallory.SignNATSNonce([]byte(testNonce))
			rc.ConnectOptions.SignedNonce = base64.RawURLEncoding.EncodeToString(sig)
		}), true},
		"other nonce": {fs.request(t, s.keys, alice, func(rc *jwt.AuthorizationRequestClaims) { rc.ClientInformation.Nonce = "AAAAAAAAAAA" }), true},
		"with a jwt": {fs.request(t, s.keys, alice, func(rc *jwt.AuthorizationRequestClaims) {
			rc.ConnectOptions.JWT = mustUserJWT(t, acct)
		}), true},
	}
	for name, c := range denied {
		data, hdr := []byte(c.tok), nats.Header(nil)
		if c.sealed {
			data, hdr = fs.seal(t, s.keys, c.tok), sealed
		}
		rs := fs.ask(t, s, nc, data, hdr)
		if rs == nil || rs.Error == "" || rs.Jwt != "" {
			t.Errorf("%s: want a signed denial, got %+v", name, rs)
			continue
		}
		t.Logf("%s: %s", name, rs.Error)
	}

	// A well-formed request, sealed and in the clear, with the standard
	// base64 signature encoding nats-server also accepts.
	for _, tc := range []struct {
		name   string
		sealed bool
		enc    *base64.Encoding
	}{{"sealed", true, base64.RawURLEncoding}, {"clear", false, base64.StdEncoding}} {
		var userNkey string
		tok := fs.request(t, s.keys, alice, func(rc *jwt.AuthorizationRequestClaims) {
			sig, _ := alice.SignNATSNonce([]byte(testNonce))
			rc.ConnectOptions.SignedNonce = tc.enc.EncodeToString(sig)
			userNkey = rc.UserNkey
		})
		data, hdr := []byte(tok), nats.Header(nil)
		if tc.sealed {
			data, hdr = fs.seal(t, s.keys, tok), sealed
		}
		rs := fs.ask(t, s, nc, data, hdr)
		if rs == nil || rs.Error != "" || rs.Subject != userNkey {
			t.Fatalf("%s: want a grant for %s, got %+v", tc.name, userNkey, rs)
		}
		uc, err := jwt.DecodeUserClaims(rs.Jwt)
		if err != nil {
			t.Fatal(err)
		}
		want := callout.Permissions(alice.PublicKey(), "")
		if uc.Subject != userNkey || uc.Name != alice.PublicKey().String() || uc.Audience != "USERS" || uc.Issuer != s.keys.IssuerPublicKey() ||
			uc.Expires != now.Add(3*time.Minute).Unix() || uc.Resp != nil ||
			strings.Join(uc.Pub.Allow, " ") != strings.Join(want.Pub.Allow, " ") ||
			strings.Join(uc.Sub.Allow, " ") != strings.Join(want.Sub.Allow, " ") ||
			uc.Limits.Payload != callout.DefaultMaxPayload || uc.Limits.Subs != callout.DefaultMaxSubscriptions {
			t.Fatalf("%s: user JWT %s", tc.name, uc)
		}
	}

	st := s.svc.Stats()
	t.Logf("stats %+v", st)
	if st.Authorized != 2 || st.Malformed < uint64(len(empty)) {
		t.Fatalf("stats %+v", st)
	}
}

// TestOddClientsRefused: logins the server forwards with odd connect
// options are refused, and the service lives on. (A client cannot make a
// request exceed MaxRequestSize: the server's 4 KiB control-line limit
// stops its CONNECT first.)
func TestOddClientsRefused(t *testing.T) {
	s := newStack(t, stackOptions{})
	alice := s.user("alice@kez.lat")
	for name, opts := range map[string][]nats.Option{
		"no credentials": nil,
		"user/password":  {nats.UserInfo("alice", "secret")},
		"token":          {nats.Token("alice")},
		"huge name":      {nats.Name(strings.Repeat("n", 3<<10)), nats.Nkey(alice.PublicKey().String(), alice.SignNATSNonce)},
		"huge name, stranger": {nats.Name(strings.Repeat("n", 3<<10)),
			nats.Nkey(mallory(t).PublicKey().String(), mallory(t).SignNATSNonce)},
	} {
		nc, err := nats.Connect(s.srv.ClientURL(), append(opts, nats.Timeout(5*time.Second), nats.NoReconnect())...)
		if name == "huge name" {
			// Registered and signed: a long client name is still fine.
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			nc.Close()
			continue
		}
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("%s: got %v, want an authorization violation", name, err)
		}
	}
	s.mustConnect(alice)
}

func mallory(t testing.TB) *kez.Identity { return newIdentity(t) }

func mustPub(kp nkeys.KeyPair) string {
	p, _ := kp.PublicKey()
	return p
}

func mustUserJWT(t testing.TB, acct nkeys.KeyPair) string {
	t.Helper()
	ukp, _ := nkeys.CreateUser()
	uc := jwt.NewUserClaims(mustPub(ukp))
	tok, err := uc.Encode(acct)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// signAsAccount makes a request-shaped JWT signed by an account key, which
// a server never does.
func signAsAccount(t testing.TB, k *callout.Keys, acct nkeys.KeyPair) string {
	t.Helper()
	// jwt refuses to encode a request with a non-server key, so splice
	// a server-signed token's payload under an account signature.
	fs := newFakeServer(t)
	tok := fs.request(t, k, nil, nil)
	parts := strings.Split(tok, ".")
	sig, err := acct.Sign([]byte(parts[0] + "." + parts[1]))
	if err != nil {
		t.Fatal(err)
	}
	return parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func TestVerifyNonce(t *testing.T) {
	alice, bob := newIdentity(t), newIdentity(t)
	sig, _ := alice.SignNATSNonce([]byte(testNonce))
	ci := jwt.ClientInformation{Nonce: testNonce}
	ok := func(o jwt.ConnectOptions) jwt.ConnectOptions { return o }
	acct, _ := nkeys.CreateAccount()
	cases := []struct {
		name string
		opts jwt.ConnectOptions
		ci   jwt.ClientInformation
		ok   bool
	}{
		{"raw url", ok(jwt.ConnectOptions{Nkey: alice.PublicKey().String(), SignedNonce: base64.RawURLEncoding.EncodeToString(sig)}), ci, true},
		{"std", jwt.ConnectOptions{Nkey: alice.PublicKey().String(), SignedNonce: base64.StdEncoding.EncodeToString(sig)}, ci, true},
		{"fail_other_key", jwt.ConnectOptions{Nkey: bob.PublicKey().String(), SignedNonce: base64.RawURLEncoding.EncodeToString(sig)}, ci, false},
		{"fail_other_nonce", jwt.ConnectOptions{Nkey: alice.PublicKey().String(), SignedNonce: base64.RawURLEncoding.EncodeToString(sig)}, jwt.ClientInformation{Nonce: "x" + testNonce}, false},
		{"fail_no_nonce", jwt.ConnectOptions{Nkey: alice.PublicKey().String(), SignedNonce: base64.RawURLEncoding.EncodeToString(sig)}, jwt.ClientInformation{}, false},
		{"fail_no_sig", jwt.ConnectOptions{Nkey: alice.PublicKey().String()}, ci, false},
		{"fail_no_nkey", jwt.ConnectOptions{SignedNonce: base64.RawURLEncoding.EncodeToString(sig)}, ci, false},
		{"fail_account_key", jwt.ConnectOptions{Nkey: mustPub(acct), SignedNonce: base64.RawURLEncoding.EncodeToString(sig)}, ci, false},
		{"fail_not_base64", jwt.ConnectOptions{Nkey: alice.PublicKey().String(), SignedNonce: "!!!"}, ci, false},
		{"fail_truncated", jwt.ConnectOptions{Nkey: alice.PublicKey().String(), SignedNonce: base64.RawURLEncoding.EncodeToString(sig[:63])}, ci, false},
		{"fail_long", jwt.ConnectOptions{Nkey: alice.PublicKey().String(), SignedNonce: strings.Repeat("A", 10000)}, ci, false},
		{"fail_jwt", jwt.ConnectOptions{JWT: "eyJ", Nkey: alice.PublicKey().String(), SignedNonce: base64.RawURLEncoding.EncodeToString(sig)}, ci, false},
	}
	for _, c := range cases {
		key, err := callout.VerifyNonce(c.opts, c.ci)
		if c.ok {
			if err != nil || key != alice.PublicKey() {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		var de *callout.DenyError
		if !errors.As(err, &de) {
			t.Errorf("%s: got %v, want a denial", c.name, err)
		}
	}
}
