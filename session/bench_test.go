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
