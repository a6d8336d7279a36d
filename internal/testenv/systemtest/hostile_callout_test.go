package systemtest

import (
	"encoding/base64"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// fakeNATSServer signs authorization requests as a nats-server does.
type fakeNATSServer struct {
	kp, xkp  nkeys.KeyPair
	id, xpub string
}

func newFakeNATSServer(t testing.TB) *fakeNATSServer {
	t.Helper()
	kp, _ := nkeys.CreateServer()
	xkp, _ := nkeys.CreateCurveKeys()
	id, _ := kp.PublicKey()
	xpub, _ := xkp.PublicKey()
	return &fakeNATSServer{kp: kp, xkp: xkp, id: id, xpub: xpub}
}

const reqNonce = "pF3n1-Qx0aw"

// request builds the request a server sends for a client logging in as
// who (a stacktest identity name, "" for no nkey), to the callout with
// issuer; mutate edits the claims before signing.
func (f *fakeNATSServer) request(t testing.TB, issuer, who string, mutate func(*jwt.AuthorizationRequestClaims)) string {
	t.Helper()
	ukp, _ := nkeys.CreateUser()
	upub, _ := ukp.PublicKey()
	rc := jwt.NewAuthorizationRequestClaims(issuer)
	rc.Audience = "nats-authorization-request"
	rc.UserNkey = upub
	rc.Server = jwt.ServerID{Name: "fake", ID: f.id, XKey: f.xpub}
	rc.Expires = time.Now().Add(2 * time.Second).Unix()
	rc.ClientInformation = jwt.ClientInformation{Host: "127.0.0.1", ID: 9, Kind: "Client", Type: "nats", Nonce: reqNonce}
	if who != "" {
		id := stacktest.Identity(who)
		rc.ConnectOptions = jwt.ConnectOptions{Nkey: id.PublicKey().String(), SignedNonce: sign(id, reqNonce), Protocol: 1}
	}
	if mutate != nil {
		mutate(rc)
	}
	tok, err := rc.Encode(f.kp)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// outcome of one request.
type outcome string

const (
	granted outcome = "granted"
	denied  outcome = "signed denial"
	dropped outcome = "empty reply"
)

// TestCalloutRequestMatrix feeds the auth callout service, running on a
// real (in-process) nats-server, authorization requests as a hostile
// party able to publish on the auth subject would craft them. Only the
// well-formed request of a registered key, checked against its nonce, is
// granted; every other row is refused: with a signed denial when the
// requesting server can be identified, otherwise with an empty reply,
// which nats-server treats as a denial. One row per case.
//
// (On a deployment only nats-server itself can publish there: the auth
// subject lives in the AUTH account, whose one user is the service. The
// bare server here lets the test speak as the server.)
func TestCalloutRequestMatrix(t *testing.T) {
	t.Parallel() // mostly waiting on other processes
	keys, err := callout.GenerateKeys()
	if err != nil {
		t.Fatal(err)
	}
	dir := &callout.StaticDirectory{}
	for _, n := range []string{"alice", "revoked", "suspended"} {
		dir.Set(stacktest.Identity(n).PublicKey(), callout.Entry{Handle: n + "@" + domain, Suspended: n == "suspended"})
	}
	dir.Delete(stacktest.Identity("revoked").PublicKey())
	svc, err := callout.New(callout.Config{Keys: keys, Directory: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ns := natstest.Run(t, "")
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if err := svc.Listen(nc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })

	fs := newFakeNATSServer(t)
	issuer := keys.IssuerPublicKey()
	acct, _ := nkeys.CreateAccount()
	acctPub, _ := acct.PublicKey()
	other := newFakeNATSServer(t)

	// A request granted now and replayed after it expired.
	replayExp := time.Now().Add(time.Second).Unix()
	replay := fs.request(t, issuer, "alice", func(rc *jwt.AuthorizationRequestClaims) { rc.Expires = replayExp })

	ask := func(data []byte, sealed bool) outcome {
		t.Helper()
		hdr := nats.Header{}
		if sealed {
			var err error
			if data, err = fs.xkp.Seal(data, keys.XKeyPublicKey()); err != nil {
				t.Fatal(err)
			}
			hdr.Set(callout.ServerXKeyHeader, fs.xpub)
		}
		m, err := nc.RequestMsg(&nats.Msg{Subject: callout.AuthSubject, Data: data, Header: hdr}, 5*time.Second)
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		if len(m.Data) == 0 {
			return dropped
		}
		body := m.Data
		if sealed {
			if body, err = fs.xkp.Open(m.Data, keys.XKeyPublicKey()); err != nil {
				t.Fatalf("the answer is not sealed to the server: %v", err)
			}
		}
		rs, err := jwt.DecodeAuthorizationResponseClaims(string(body))
		if err != nil {
			t.Fatalf("answer: %v", err)
		}
		if rs.Issuer != issuer {
			t.Fatalf("answer signed by %s", rs.Issuer)
		}
		if rs.Jwt != "" && rs.Error == "" {
			return granted
		}
		return denied
	}
	if got := ask([]byte(replay), true); got != granted {
		t.Fatalf("the request to replay was not granted the first time: %s", got)
	}

	type row struct {
		name   string
		data   func() []byte
		sealed bool
	}
	tok := func(who string, mutate func(*jwt.AuthorizationRequestClaims)) func() []byte {
		return func() []byte { return []byte(fs.request(t, issuer, who, mutate)) }
	}
	rows := []row{
		{"forged: signed by another server key than the ID it claims", tok("alice", func(rc *jwt.AuthorizationRequestClaims) { rc.Server.ID = other.id }), true},
		{"forged: request-shaped token signed by an account key", func() []byte {
			parts := strings.Split(fs.request(t, issuer, "alice", nil), ".")
			sig, _ := acct.Sign([]byte(parts[0] + "." + parts[1]))
			return []byte(parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sig))
		}, false},
		{"forged: nonce signed by another key than the claimed one", tok("alice", func(rc *jwt.AuthorizationRequestClaims) {
			rc.ConnectOptions.SignedNonce = sign(stacktest.Identity("mallory"), reqNonce)
		}), true},
		{"replayed after it expired", func() []byte {
			time.Sleep(time.Until(time.Unix(replayExp+1, 0))) // wall-clock expiry of the token, not synchronisation
			return []byte(replay)
		}, true},
		{"expired", tok("alice", func(rc *jwt.AuthorizationRequestClaims) { rc.Expires = time.Now().Add(-time.Minute).Unix() }), true},
		{"oversized", func() []byte { return []byte(strings.Repeat("eyJ", callout.MaxRequestSize)) }, false},
		{"wrong issuer (addressed to another callout)", tok("alice", func(rc *jwt.AuthorizationRequestClaims) { rc.Subject = acctPub }), true},
		{"wrong audience", tok("alice", func(rc *jwt.AuthorizationRequestClaims) { rc.Audience = "someone-else" }), true},
		{"malformed JWT: garbage", func() []byte { return []byte("hello") }, false},
		{"malformed JWT: two parts", func() []byte {
			p := strings.Split(fs.request(t, issuer, "alice", nil), ".")
			return []byte(p[0] + "." + p[1])
		}, false},
		{"malformed JWT: body not base64", func() []byte {
			p := strings.Split(fs.request(t, issuer, "alice", nil), ".")
			return []byte(p[0] + ".!!!." + p[2])
		}, false},
		{"malformed JWT: tampered claims", func() []byte {
			p := strings.Split(fs.request(t, issuer, "alice", nil), ".")
			body, _ := base64.RawURLEncoding.DecodeString(p[1])
			body = []byte(strings.Replace(string(body), `"fake"`, `"evil"`, 1))
			return []byte(p[0] + "." + base64.RawURLEncoding.EncodeToString(body) + "." + p[2])
		}, false},
		{"malformed: sealed bytes that do not open", func() []byte { return []byte("not sealed") }, false},
		{"unknown key", tok("mallory", nil), true},
		{"revoked key (removed from the directory)", tok("revoked", nil), true},
		{"suspended key", tok("suspended", nil), true},
		{"missing nonce", tok("alice", func(rc *jwt.AuthorizationRequestClaims) { rc.ClientInformation.Nonce = "" }), true},
		{"missing nonce signature", tok("alice", func(rc *jwt.AuthorizationRequestClaims) { rc.ConnectOptions.SignedNonce = "" }), true},
		{"missing nkey", tok("", nil), true},
		{"user nkey of the connection is not a user key", tok("alice", func(rc *jwt.AuthorizationRequestClaims) { rc.UserNkey = acctPub }), true},
		{"client presents a user JWT", tok("alice", func(rc *jwt.AuthorizationRequestClaims) {
			uc := jwt.NewUserClaims(rc.UserNkey)
			rc.ConnectOptions.JWT, _ = uc.Encode(acct)
		}), true},
		{"sealed with a server xkey the claims do not name", tok("alice", func(rc *jwt.AuthorizationRequestClaims) { rc.Server.XKey = other.xpub }), true},
	}
	refusedSigned, refusedEmpty := 0, 0
	for _, r := range rows {
		got := ask(r.data(), r.sealed)
		t.Logf("%-62s → %s", r.name, got)
		switch got {
		case granted:
			t.Errorf("%s: granted", r.name)
		case denied:
			refusedSigned++
		case dropped:
			refusedEmpty++
		}
	}
	// Still serving: the control row.
	if got := ask(tok("alice", nil)(), true); got != granted {
		t.Fatalf("a good request after the matrix: %s", got)
	}
	st := svc.Stats()
	t.Logf("callout request matrix: %d hostile rows refused (%d signed denials, %d empty replies); service stats %+v",
		len(rows), refusedSigned, refusedEmpty, st)
}
