package chat

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/kez-lat/kez-chat/internal/testenv/vectorid"
)

// The envelope benchmarks run beside BenchmarkFloor, the raw public-key and
// AEAD operations an envelope cannot avoid, so one run shows the overhead:
//
//	go test ./chat -run '^$' -bench 'Seal|Open|Floor' -benchmem
//
// Seal does one X25519 key generation and one X25519 DH (HPKE encap), one
// ed25519 signature and one AEAD seal; Open does one X25519 DH, one ed25519
// verification and one AEAD open. Floor/seal-N and Floor/open-N are exactly
// those operations in a row. On a shared machine, where absolute figures
// drift between sub-benchmarks, BenchmarkOverhead interleaves the envelope
// operation with its floor in one loop and reports the ratio (x-floor).

var benchSizes = []int{256, 4096}

func BenchmarkSeal(b *testing.B) {
	alice, bob := vectorid.Identity(b, "alice"), vectorid.Identity(b, "bob")
	to := recipientOf(bob, 0)
	for _, n := range benchSizes {
		m := Message{Kind: "bench", Body: make([]byte, n)}
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Seal(alice, to, m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkOpen(b *testing.B) {
	alice, bob := vectorid.Identity(b, "alice"), vectorid.Identity(b, "bob")
	o := mustOpener(b, bob)
	for _, n := range benchSizes {
		env := mustSeal(b, alice, recipientOf(bob, 0), Message{Kind: "bench", Body: make([]byte, n)})
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := o.Open(env, alice.PublicKey()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	// The one-shot Open derives the recipient's key each call.
	env := mustSeal(b, alice, recipientOf(bob, 0), Message{Kind: "bench", Body: make([]byte, 256)})
	b.Run("oneshot-256", func(b *testing.B) {
		b.SetBytes(256)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := OpenEnvelope(bob, env, alice.PublicKey(), nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkFloor(b *testing.B) {
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	edPub := edPriv.Public().(ed25519.PublicKey)
	x := ecdh.X25519()
	xPriv, _ := x.GenerateKey(rand.Reader)
	xPeer, _ := x.GenerateKey(rand.Reader)
	sigMsg := make([]byte, 160) // about the size of a signed header and inner fields
	sig := ed25519.Sign(edPriv, sigMsg)
	aead, _ := chacha20poly1305.New(make([]byte, chacha20poly1305.KeySize))
	nonce := make([]byte, chacha20poly1305.NonceSize)

	b.Run("x25519-keygen", func(b *testing.B) {
		for b.Loop() {
			if _, err := x.GenerateKey(rand.Reader); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("x25519-ecdh", func(b *testing.B) {
		for b.Loop() {
			if _, err := xPriv.ECDH(xPeer.PublicKey()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ed25519-sign", func(b *testing.B) {
		for b.Loop() {
			ed25519.Sign(edPriv, sigMsg)
		}
	})
	b.Run("ed25519-verify", func(b *testing.B) {
		for b.Loop() {
			if !ed25519.Verify(edPub, sigMsg, sig) {
				b.Fatal("verify")
			}
		}
	})
	for _, n := range benchSizes {
		pt := make([]byte, n)
		ct := aead.Seal(nil, nonce, pt, nil)
		buf := make([]byte, 0, n+aead.Overhead())
		b.Run(fmt.Sprintf("chacha20poly1305-%d", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				aead.Seal(buf[:0], nonce, pt, nil)
			}
		})
		b.Run(fmt.Sprintf("seal-%d", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				eph, _ := x.GenerateKey(rand.Reader)
				if _, err := eph.ECDH(xPeer.PublicKey()); err != nil {
					b.Fatal(err)
				}
				ed25519.Sign(edPriv, sigMsg)
				aead.Seal(buf[:0], nonce, pt, nil)
			}
		})
		b.Run(fmt.Sprintf("open-%d", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				if _, err := xPriv.ECDH(xPeer.PublicKey()); err != nil {
					b.Fatal(err)
				}
				if !ed25519.Verify(edPub, sigMsg, sig) {
					b.Fatal("verify")
				}
				if _, err := aead.Open(buf[:0], nonce, ct, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkOverhead alternates an envelope operation with its raw floor
// (the same public-key and AEAD operations, see BenchmarkFloor) in one loop,
// so both see the same machine load, and reports each one's time and their
// ratio.
func BenchmarkOverhead(b *testing.B) {
	alice, bob := vectorid.Identity(b, "alice"), vectorid.Identity(b, "bob")
	to := recipientOf(bob, 0)
	o := mustOpener(b, bob)
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	edPub := edPriv.Public().(ed25519.PublicKey)
	x := ecdh.X25519()
	xPriv, _ := x.GenerateKey(rand.Reader)
	xPeer, _ := x.GenerateKey(rand.Reader)
	sigMsg := make([]byte, 160)
	sig := ed25519.Sign(edPriv, sigMsg)
	aead, _ := chacha20poly1305.New(make([]byte, chacha20poly1305.KeySize))
	nonce := make([]byte, chacha20poly1305.NonceSize)
	for _, n := range benchSizes {
		m := Message{Kind: "bench", Body: make([]byte, n)}
		env := mustSeal(b, alice, to, m)
		pt := make([]byte, n)
		ct := aead.Seal(nil, nonce, pt, nil)
		buf := make([]byte, 0, n+aead.Overhead())
		pair(b, fmt.Sprintf("seal-%d", n), func() {
			if _, err := Seal(alice, to, m); err != nil {
				b.Fatal(err)
			}
		}, func() {
			eph, _ := x.GenerateKey(rand.Reader)
			eph.ECDH(xPeer.PublicKey())
			ed25519.Sign(edPriv, sigMsg)
			aead.Seal(buf[:0], nonce, pt, nil)
		})
		pair(b, fmt.Sprintf("open-%d", n), func() {
			if _, err := o.Open(env, alice.PublicKey()); err != nil {
				b.Fatal(err)
			}
		}, func() {
			xPriv.ECDH(xPeer.PublicKey())
			ed25519.Verify(edPub, sigMsg, sig)
			aead.Open(buf[:0], nonce, ct, nil)
		})
	}
}

func pair(b *testing.B, name string, op, floor func()) {
	b.Run(name, func(b *testing.B) {
		var tOp, tFloor time.Duration
		for b.Loop() {
			t := time.Now()
			op()
			t1 := time.Now()
			floor()
			tOp += t1.Sub(t)
			tFloor += time.Since(t1)
		}
		b.ReportMetric(float64(tOp.Nanoseconds())/float64(b.N), "envelope-ns/op")
		b.ReportMetric(float64(tFloor.Nanoseconds())/float64(b.N), "floor-ns/op")
		b.ReportMetric(float64(tOp)/float64(tFloor), "x-floor")
	})
}
