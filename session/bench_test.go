package session

import (
	"crypto/ecdh"
	"crypto/hpke"
	"fmt"
	"testing"

	"github.com/kez-lat/kez-chat/internal/cputime"
	"github.com/kez-lat/kez-chat/internal/testenv/vectorid"
)

// The session benchmarks: the steady-state cost of a message, and the
// handshake's, with the hybrid KEM and, for comparison only, with
// DHKEM(X25519) through the same code:
//
//	go test ./session -run '^$' -bench . -benchmem
//
// BenchmarkSenderKeySeal and BenchmarkSenderKeyOpen are the same for a
// group message (format v3), which is sealed once for the whole group.
//
// BenchmarkSealOpen is one Seal and one Open of the same message in an
// established session (no DH step): the whole crypto CPU per message.
// Every benchmark also reports cpu-ns/op, the process's CPU time per
// operation, which a busy machine inflates less than the wall time.

// cpuLoop runs op b.N times and reports the process CPU time per op.
func cpuLoop(b *testing.B, op func()) {
	b.Helper()
	cpu0, ok0 := cputime.Process()
	for b.Loop() {
		op()
	}
	if cpu1, ok1 := cputime.Process(); ok0 && ok1 {
		b.ReportMetric(float64(cpu1-cpu0)/float64(b.N), "cpu-ns/op")
	}
}

func BenchmarkSealOpen(b *testing.B) {
	for _, n := range []int{256, 4096} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			p := newPair(b)
			p.establish()
			p.open(p.b, p.seal(p.a, "step"), "step") // alice's sending chain is set up
			msg := make([]byte, n)
			b.SetBytes(int64(n))
			b.ReportAllocs()
			cpuLoop(b, func() {
				env, err := p.a.Seal(nil, msg)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := p.b.Open(env, t0); err != nil {
					b.Fatal(err)
				}
			})
		})
	}
}

// BenchmarkSenderKeySeal is one group message sealed with a sender key
// (docs/spec/senderkeys.md): the chain step, the AEAD and an ed25519
// signature, once for every member; compare BenchmarkSealOpen, paid once
// per member device.
func BenchmarkSenderKeySeal(b *testing.B) {
	k := newTestSenderKey(b, "alice", 1)
	msg := make([]byte, 256)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	cpuLoop(b, func() {
		if _, err := k.Seal(msg); err != nil {
			b.Fatal(err)
		}
	})
}

// BenchmarkSenderKeyOpen is one group message opened by a member: the
// signature check, the chain step and the AEAD, each time from the same
// receiver state.
func BenchmarkSenderKeyOpen(b *testing.B) {
	k := newTestSenderKey(b, "alice", 1)
	base := NewReceiverKey(k.Distribution())
	env, err := k.Seal(make([]byte, 256))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(256)
	b.ReportAllocs()
	cpuLoop(b, func() {
		r := *base
		if _, err := r.Open(env); err != nil {
			b.Fatal(err)
		}
	})
}

// x25519Suite is DHKEM(X25519, HKDF-SHA256), for the comparison only:
// format version 2 accepts the hybrid KEM alone.
var x25519Suite = &kemSuite{id: 0x0020, encLen: 32, kem: hpke.DHKEM(ecdh.X25519())}

// BenchmarkHandshake measures the initiator's Initiate and first Seal
// (KEM encapsulation, signature, the first chain) and the recipient's
// Accept (signature verification, decapsulation, the first DH step, the
// message), with a 256-byte message.
func BenchmarkHandshake(b *testing.B) {
	alice, bob := vectorid.Identity(b, "alice"), vectorid.Identity(b, "bob")
	prekey := testPrekey(b, bob, 7)
	msg := make([]byte, 256)
	var ratchetPriv, ratchetPub [keyLen]byte
	copy(ratchetPriv[:], prekey.RatchetKey().Bytes())
	ratchetPub = prekey.Public.RatchetPublic
	x25519Key, err := x25519Suite.kem.GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		ks      *kemSuite
		kemPub  hpke.PublicKey
		kemPriv hpke.PrivateKey
	}{
		{"hybrid", hybridSuite, prekey.KEMKey().PublicKey(), prekey.KEMKey()},
		{"x25519-only", x25519Suite, x25519Key.PublicKey(), x25519Key},
	} {
		initiateSeal := func() []byte {
			s, err := initiate(nil, alice, bob.PublicKey(), 7, c.ks, c.kemPub, &ratchetPub)
			if err != nil {
				b.Fatal(err)
			}
			env, err := s.Seal(nil, msg)
			if err != nil {
				b.Fatal(err)
			}
			return env
		}
		b.Run(c.name+"/initiate+seal", func(b *testing.B) {
			b.ReportAllocs()
			cpuLoop(b, func() { initiateSeal() })
		})
		env := initiateSeal()
		b.Run(c.name+"/accept", func(b *testing.B) {
			b.ReportAllocs()
			cpuLoop(b, func() {
				var p parsed
				if err := parse(env, c.ks, &p); err != nil {
					b.Fatal(err)
				}
				if _, _, err := accept(bob.PublicKey(), &p, c.ks, c.kemPriv, &ratchetPriv, t0); err != nil {
					b.Fatal(err)
				}
			})
		})
	}
}

// BenchmarkStore is the cost of keeping a session between messages:
// MarshalBinary and ParseSession of an established session's state.
func BenchmarkStore(b *testing.B) {
	p := newPair(b)
	p.establish()
	b.ReportAllocs()
	cpuLoop(b, func() {
		st, err := p.a.MarshalBinary()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ParseSession(st); err != nil {
			b.Fatal(err)
		}
	})
}
