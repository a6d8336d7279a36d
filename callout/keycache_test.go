package callout

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nkeys"
)

func TestSigningKeyMatchesNkeys(t *testing.T) {
	kp, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	sk, err := newSigningKey(kp)
	if err != nil {
		t.Fatal(err)
	}
	wantPub, _ := kp.PublicKey()
	if got, _ := sk.PublicKey(); got != wantPub {
		t.Errorf("public key %s, want %s", got, wantPub)
	}
	msg := []byte("a claim")
	want, _ := kp.Sign(msg)
	got, _ := sk.Sign(msg)
	if !bytes.Equal(got, want) {
		t.Error("the cached key signs differently from nkeys")
	}
	if err := sk.Verify(msg, got); err != nil {
		t.Error(err)
	}
	got[0] ^= 1
	if err := sk.Verify(msg, got); err == nil {
		t.Error("a forged signature verified")
	}
	if err := kp.Verify(msg, want); err != nil {
		t.Error(err)
	}
	curve, _ := nkeys.CreateCurveKeys()
	if _, err := newSigningKey(curve); err == nil {
		t.Error("a curve key was accepted as a signing key")
	}
}

func TestXKeyBoxMatchesNkeys(t *testing.T) {
	svc, _ := nkeys.CreateCurveKeys()
	server, _ := nkeys.CreateCurveKeys()
	other, _ := nkeys.CreateCurveKeys()
	svcPub, _ := svc.PublicKey()
	serverPub, _ := server.PublicKey()
	otherPub, _ := other.PublicKey()
	b, err := newXKeyBox(svc)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("an authorization request")

	// The server seals with nkeys; the box opens (twice: the second from
	// the cached shared key).
	sealed, err := server.Seal(msg, svcPub)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		got, err := b.Open(sealed, serverPub)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("Open = %q, %v", got, err)
		}
	}
	// The box seals; the server opens with nkeys.
	reply, err := b.Seal(msg, serverPub)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := server.Open(reply, svcPub); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("nkeys Open = %q, %v", got, err)
	}

	// Negative paths, each with nkeys' error.
	if _, err := b.Open(sealed, otherPub); !errors.Is(err, nkeys.ErrCouldNotDecrypt) {
		t.Errorf("opened as if from another server: %v", err)
	}
	tampered := bytes.Clone(sealed)
	tampered[len(tampered)-1] ^= 1
	if _, err := b.Open(tampered, serverPub); !errors.Is(err, nkeys.ErrCouldNotDecrypt) {
		t.Errorf("tampered: %v", err)
	}
	wrongVersion := bytes.Clone(sealed)
	wrongVersion[0] = 'y'
	if _, err := b.Open(wrongVersion, serverPub); !errors.Is(err, nkeys.ErrInvalidEncVersion) {
		t.Errorf("wrong version: %v", err)
	}
	if _, err := b.Open(sealed[:xkeyHeaderLen], serverPub); !errors.Is(err, nkeys.ErrInvalidEncrypted) {
		t.Errorf("truncated: %v", err)
	}
	if _, err := b.Open(sealed, "XNOTAKEY"); !errors.Is(err, nkeys.ErrInvalidSender) {
		t.Errorf("bad sender key: %v", err)
	}
	if _, err := b.Seal(msg, svcPub[:10]); !errors.Is(err, nkeys.ErrInvalidRecipient) {
		t.Errorf("bad recipient key: %v", err)
	}
	acct, _ := nkeys.CreateAccount()
	if _, err := newXKeyBox(acct); err == nil {
		t.Error("an account key was accepted as an xkey")
	}
}

func TestXKeyBoxCacheIsBounded(t *testing.T) {
	svc, _ := nkeys.CreateCurveKeys()
	b, err := newXKeyBox(svc)
	if err != nil {
		t.Fatal(err)
	}
	for i := range maxSharedKeys + 10 {
		kp, _ := nkeys.CreateCurveKeys()
		pub, _ := kp.PublicKey()
		if _, err := b.sharedKey(pub); err != nil {
			t.Fatal(fmt.Errorf("key %d: %w", i, err))
		}
	}
	if n := len(b.shared); n > maxSharedKeys {
		t.Errorf("%d shared keys cached, at most %d", n, maxSharedKeys)
	}
}
