package callout_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// BenchmarkConnect measures a full login (TCP, nonce signature, auth, first
// PONG) and close: through the auth callout, beside the baseline of a plain
// nkey user listed in nats.conf (the service user) on the same server.
func BenchmarkConnect(b *testing.B) {
	s := newStack(b, stackOptions{})
	alice := s.user("alice@kez.lat")
	url := s.srv.ClientURL()
	run := func(b *testing.B, opts []nats.Option) {
		b.ReportAllocs()
		start := time.Now()
		for b.Loop() {
			nc, err := nats.Connect(url, opts...)
			if err != nil {
				b.Fatal(err)
			}
			nc.Close()
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "connects/s")
	}
	b.Run("callout", func(b *testing.B) {
		run(b, loginOptions(alice.PublicKey(), alice.SignNATSNonce))
	})
	b.Run("plain_nkey", func(b *testing.B) {
		run(b, append(s.keys.ServiceOptions(), nats.NoReconnect()))
	})
	b.Run("callout_parallel", func(b *testing.B) {
		opts := loginOptions(alice.PublicKey(), alice.SignNATSNonce)
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				nc, err := nats.Connect(url, opts...)
				if err != nil {
					b.Error(err)
					return
				}
				nc.Close()
			}
		})
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "connects/s")
	})
}
