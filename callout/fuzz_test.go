package callout

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// fixedPair makes a deterministic key pair, so saved fuzz inputs stay
// meaningful between runs.
func fixedPair(t testing.TB, prefix nkeys.PrefixByte, fill byte) nkeys.KeyPair {
	t.Helper()
	seed, err := nkeys.EncodeSeed(prefix, bytes.Repeat([]byte{fill}, 32))
	if err != nil {
		t.Fatal(err)
	}
	kp, err := nkeys.FromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// FuzzHandleRequest runs arbitrary bytes and header values through the
// whole request path (open, decode, check, verify the nonce, look up,
// sign) and checks the envelope checker's contract.
func FuzzHandleRequest(f *testing.F) {
	keys := &Keys{
		Issuer:      fixedPair(f, nkeys.PrefixByteAccount, 1),
		XKey:        fixedPair(f, nkeys.PrefixByteCurve, 2),
		Service:     fixedPair(f, nkeys.PrefixByteUser, 3),
		Provisioner: fixedPair(f, nkeys.PrefixByteUser, 4),
	}
	server := fixedPair(f, nkeys.PrefixByteServer, 5)
	serverX := fixedPair(f, nkeys.PrefixByteCurve, 6)
	serverID, _ := server.PublicKey()
	serverXPub, _ := serverX.PublicKey()
	user, err := kez.FromSeed(bytes.Repeat([]byte{7}, 64))
	if err != nil {
		f.Fatal(err)
	}
	dir := &StaticDirectory{}
	dir.Set(user.PublicKey(), Entry{Handle: "alice@kez.lat"})
	svc, err := New(Config{Keys: keys, Directory: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		f.Fatal(err)
	}

	sig, _ := user.SignNATSNonce([]byte("kT9_Ozx3bQc"))
	rc := jwt.NewAuthorizationRequestClaims(keys.IssuerPublicKey())
	rc.Audience = requestAudience
	rc.UserNkey = keys.ProvisionerPublicKey() // any user key
	rc.Server = jwt.ServerID{Name: "n", ID: serverID, XKey: serverXPub}
	rc.ClientInformation = jwt.ClientInformation{Nonce: "kT9_Ozx3bQc", Kind: "Client"}
	rc.ConnectOptions = jwt.ConnectOptions{Nkey: user.PublicKey().String(), SignedNonce: base64.RawURLEncoding.EncodeToString(sig)}
	tok, err := rc.Encode(server)
	if err != nil {
		f.Fatal(err)
	}
	sealed, err := serverX.Seal([]byte(tok), keys.XKeyPublicKey())
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(tok), "")
	f.Add(sealed, serverXPub)
	f.Add([]byte("eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.AAAA"), "")
	f.Add([]byte{}, "X")
	f.Add(sealed[:len(sealed)/2], serverXPub)

	f.Fuzz(func(t *testing.T, data []byte, xkeyHeader string) {
		got, err := openRequest(data, xkeyHeader, keys.XKey, keys.IssuerPublicKey())
		if err != nil && !errors.Is(err, ErrMalformedRequest) {
			t.Fatalf("error does not wrap ErrMalformedRequest: %v", err)
		}
		if got != nil {
			if !nkeys.IsValidPublicUserKey(got.UserNkey) || got.Server.ID != got.Issuer || !nkeys.IsValidPublicServerKey(got.Issuer) {
				t.Fatalf("claims returned for an unidentified sender: %+v", got)
			}
		}
		if err == nil {
			if got.Audience != requestAudience || got.Subject != keys.IssuerPublicKey() {
				t.Fatalf("accepted claims %+v", got)
			}
		}
		m := &nats.Msg{Subject: AuthSubject, Data: data}
		if xkeyHeader != "" {
			m.Header = nats.Header{ServerXKeyHeader: []string{xkeyHeader}}
		}
		svc.handle(m) // no reply subject: decides without sending
	})
}

// FuzzPeek runs arbitrary bytes through peek, the unverified read that
// picks a request's lane, and checks that it agrees with the full check
// on every request the full check accepts (so no valid login is sorted
// by claims it does not carry).
func FuzzPeek(f *testing.F) {
	issuer := fixedPair(f, nkeys.PrefixByteAccount, 1)
	issuerPub, _ := issuer.PublicKey()
	server := fixedPair(f, nkeys.PrefixByteServer, 5)
	serverID, _ := server.PublicKey()
	user := fixedPair(f, nkeys.PrefixByteUser, 8)
	userPub, _ := user.PublicKey()
	rc := jwt.NewAuthorizationRequestClaims(issuerPub)
	rc.Audience = requestAudience
	rc.UserNkey = userPub
	rc.Server = jwt.ServerID{Name: "n", ID: serverID}
	rc.Expires = 4_000_000_000
	rc.ClientInformation = jwt.ClientInformation{Host: "2001:db8::7", Nonce: "kT9_Ozx3bQc", Kind: "Client"}
	rc.ConnectOptions = jwt.ConnectOptions{Nkey: userPub, SignedNonce: "AAAA"}
	tok, err := rc.Encode(server)
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(tok))
	f.Add([]byte("a.b.c"))
	f.Add([]byte("..."))
	f.Add([]byte("eyJ0eXAiOiJKV1QifQ.eyJleHAiOi0xLCJuYXRzIjp7ImNsaWVudF9pbmZvIjp7Imhvc3QiOjF9fX0.x"))
	f.Add([]byte("eyJ0eXAiOiJKV1QifQ.eyJuYXRzIjpudWxsfQ.x"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := peek(data)
		full, ferr := decodeRequest(data, "", issuerPub)
		if ferr != nil {
			return
		}
		if err != nil {
			t.Fatalf("peek refused a request the full check accepts: %v", err)
		}
		if p.Exp != full.Expires || p.Nats.ClientInfo.Host != full.ClientInformation.Host || p.Nats.ConnectOpts.Nkey != full.ConnectOptions.Nkey {
			t.Fatalf("peek read %+v, the full check %+v", p, full.AuthorizationRequest)
		}
	})
}
