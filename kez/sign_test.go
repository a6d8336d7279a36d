package kez

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
)

func TestSignVerify(t *testing.T) {
	id := mustIdentity(t, countingWords)
	k := id.PublicKey()
	msg := []byte("the message")
	sig, err := id.Sign(ContextSigchainLink, msg)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Verify(ContextSigchainLink, msg, sig); err != nil {
		t.Fatalf("own signature: %v", err)
	}
	var s Signer = id
	if s.PublicKey() != k {
		t.Fatal("Signer.PublicKey")
	}
}

func TestSignatureContextSeparation(t *testing.T) {
	id := mustIdentity(t, countingWords)
	k := id.PublicKey()
	msg := []byte("claim alice@kez.lat")
	ctxs := []string{ContextSigchainLink, ContextHandleClaim, ContextMessage, ContextPeerAddrs, ContextDeviceLinkRequest, ContextGroupLink, ContextClaim, ContextTicket, "kez/v1 other"}
	for _, c := range ctxs {
		sig, err := id.Sign(c, msg)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ctxs {
			err := k.Verify(d, msg, sig)
			if (c == d) != (err == nil) {
				t.Errorf("signed under %q, verify under %q: %v", c, d, err)
			}
			if c != d && !errors.Is(err, ErrBadSignature) {
				t.Errorf("want ErrBadSignature, got %v", err)
			}
		}
	}
	// The context length byte keeps (context, message) boundaries apart:
	// "kez/v1 ab"+"c" and "kez/v1 a"+"bc" sign different bytes.
	sig, _ := id.Sign("kez/v1 ab", []byte("c"))
	if k.Verify("kez/v1 a", []byte("bc"), sig) == nil {
		t.Error("a signature moved across the context/message boundary")
	}
}

func TestSignatureForgedAndTampered(t *testing.T) {
	id := mustIdentity(t, countingWords)
	mallory := mustIdentity(t, strings.Repeat("zoo ", 23)+"vote")
	k := id.PublicKey()
	msg := []byte("pay bob 10")
	sig, _ := id.Sign(ContextMessage, msg)

	forged, _ := mallory.Sign(ContextMessage, msg)
	if err := k.Verify(ContextMessage, msg, forged); !errors.Is(err, ErrBadSignature) {
		t.Errorf("another key's signature: %v", err)
	}
	if err := k.Verify(ContextMessage, []byte("pay bob 99"), sig); !errors.Is(err, ErrBadSignature) {
		t.Errorf("tampered message: %v", err)
	}
	for i := 0; i < len(sig); i += 7 {
		bad := bytes.Clone(sig)
		bad[i] ^= 0x40
		if err := k.Verify(ContextMessage, msg, bad); !errors.Is(err, ErrBadSignature) {
			t.Errorf("signature byte %d flipped: %v", i, err)
		}
	}
	for _, bad := range [][]byte{nil, sig[:63], append(bytes.Clone(sig), 0), make([]byte, 64)} {
		if err := k.Verify(ContextMessage, msg, bad); !errors.Is(err, ErrBadSignature) {
			t.Errorf("signature of %d bytes: %v", len(bad), err)
		}
	}
	// A raw ed25519 signature over the bare message (no KEZ prefix) is refused.
	raw := ed25519.Sign(id.Ed25519PrivateKey(), msg)
	if err := k.Verify(ContextMessage, msg, raw); !errors.Is(err, ErrBadSignature) {
		t.Errorf("raw signature accepted: %v", err)
	}
	// And a KEZ signature verifies as raw ed25519 only over the full signed bytes.
	sm, _ := SignedMessage(ContextMessage, msg)
	if !ed25519.Verify(k.Ed25519(), sm, sig) || ed25519.Verify(k.Ed25519(), msg, sig) {
		t.Error("signed bytes are not prefix || len || context || msg")
	}
}

func TestSignBadContext(t *testing.T) {
	id := mustIdentity(t, countingWords)
	for _, c := range []string{"", strings.Repeat("a", 256), "kez/v1\x00x", "kez/v1 \n", "kez/v1 é"} {
		if _, err := id.Sign(c, []byte("m")); err == nil {
			t.Errorf("Sign accepted context %q", c)
		}
		if err := id.PublicKey().Verify(c, []byte("m"), make([]byte, 64)); err == nil {
			t.Errorf("Verify accepted context %q", c)
		}
	}
	if _, err := id.Sign(strings.Repeat("a", 255), nil); err != nil {
		t.Errorf("a 255-byte context: %v", err)
	}
}

func TestSignedMessageLayout(t *testing.T) {
	sm, err := SignedMessage("kez/v1 x", []byte("msg"))
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte("KEZ\x00sig\x00v1\x00"), 8)
	want = append(want, "kez/v1 xmsg"...)
	if !bytes.Equal(sm, want) {
		t.Fatalf("got %q, want %q", sm, want)
	}
}

func TestSignNATSNonce(t *testing.T) {
	id := mustIdentity(t, countingWords)
	for _, n := range []string{"Xk9_2mQ-7rTzYw0", "abc+/def==", strings.Repeat("A", 64)} {
		sig, err := id.SignNATSNonce([]byte(n))
		if err != nil {
			t.Fatalf("nonce %q: %v", n, err)
		}
		if !ed25519.Verify(id.PublicKey().Ed25519(), []byte(n), sig) {
			t.Fatalf("nonce %q: signature does not verify as plain ed25519", n)
		}
	}
	sm, _ := SignedMessage(ContextHandleClaim, []byte("alice"))
	for _, n := range [][]byte{nil, {}, sm, []byte("KEZ\x00sig\x00v1\x00"), []byte(strings.Repeat("A", 65)),
		[]byte("noise-libp2p-static-key:abc"), []byte("libp2p-tls-handshake:abc"), []byte("a b"), []byte("abc\n")} {
		if _, err := id.SignNATSNonce(n); err == nil {
			t.Errorf("SignNATSNonce(%q) signed", n)
		}
	}
}
