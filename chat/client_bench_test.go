package chat

// Messaging benchmarks, all in one run against one in-process stack, so the
// figures can be compared: raw core NATS publish→receive, raw JetStream
// publish→consume on the inbox stream, sealed send→receive through the
// client (seal, publish with async acks, consume, open, verify, store, ack,
// receipt), and seal and open alone (the crypto floor). Throughput
// sub-benchmarks report msgs/s; the sealed one also floor-ratio, its
// throughput over that of seal+open done back to back (and cpu-floor-ratio,
// the same in process CPU time, which shared machines disturb less). Latency
// sub-benchmarks send one message at a time and report p50-µs and p99-µs;
// the sealed one also p50-ratio against the raw JetStream round.
//
//	go test -run XXX -bench Messaging -benchtime 2000x ./chat/

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/chatserver"
	"github.com/kez-lat/kez-chat/internal/cputime"
	"github.com/kez-lat/kez-chat/internal/inbox"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
)

var messagingSizes = []int{256, 4096}

func BenchmarkMessaging(b *testing.B) {
	st := stacktest.Start(b, stacktest.Options{MailLimits: chatserver.NoMailLimits, Inbox: callout.InboxConfig{MaxMsgsPerSubject: 1 << 30, MaxBytes: 8 << 30}})
	au, bu, ru, su := st.NewUser(b, "alice"), st.NewUser(b, "bob"), st.NewUser(b, "rawa"), st.NewUser(b, "rawb")
	alice, bob := openClient(b, st, au), openClient(b, st, bu)
	mustAdd(b, alice, "bob")
	mustAdd(b, bob, "alice")
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)

	// Bob receives for the whole run.
	bobGot := make(chan struct{}, 1<<16)
	runDone := make(chan struct{})
	go func() { defer close(runDone); bob.Run(ctx, func(*Entry) { bobGot <- struct{}{} }) }()
	b.Cleanup(func() { cancel(); <-runDone })

	// The raw pair: rawa publishes, rawb receives by core NATS on its
	// signalling subject and by its own durable consumer on the inbox
	// stream, exactly as the client's consumer is configured.
	rawa, err := Connect(ctx, st.NATSURL, ru.Identity)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(rawa.Close)
	rawb, err := Connect(ctx, st.NATSURL, su.Identity)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(rawb.Close)
	coreGot := make(chan struct{}, 1<<16)
	sub, err := rawb.Subscribe(callout.P2PSubjectPrefix+su.Key.String(), func(*nats.Msg) { coreGot <- struct{}{} })
	if err != nil {
		b.Fatal(err)
	}
	sub.SetPendingLimits(-1, -1)
	jsa, err := jetstream.New(rawa, jetstream.WithPublishAsyncMaxPending(1024))
	if err != nil {
		b.Fatal(err)
	}
	// rawb receives through the gate as every user does (pull.go).
	if _, err := inbox.Open(ctx, rawb, su.Key.String(), 0); err != nil {
		b.Fatalf("rawb's consumer: %v", err)
	}
	jsGot := make(chan struct{}, 1<<16)
	never := make(chan struct{})
	cc := inbox.NewPuller(rawb, su.Key.String(), DefaultStream).Consume(fetchBatch, func() <-chan struct{} { return never },
		func(m jetstream.Msg) { m.Ack(); jsGot <- struct{}{} }, func(error) {})
	b.Cleanup(cc.Drain)
	rawSubject := sendSubject(su.Key, ru.Key)

	for _, size := range messagingSizes {
		text := strings.Repeat("x", size)
		payload := []byte(text)
		rcpt := Recipient{Key: bu.Key, EncryptionKey: bu.Identity.EncryptionKey(0).PublicKey()}
		m := Message{Kind: KindText, Body: payload}
		opener, err := NewOpener(bu.Identity, nil)
		if err != nil {
			b.Fatal(err)
		}
		env, err := Seal(au.Identity, rcpt, m)
		if err != nil {
			b.Fatal(err)
		}

		b.Run(fmt.Sprintf("seal/%d", size), func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, err := Seal(au.Identity, rcpt, m); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("open/%d", size), func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, err := opener.Open(env, au.Key); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("seal+open/%d", size), func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				e, err := Seal(au.Identity, rcpt, m)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := opener.Open(e, au.Key); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})

		b.Run(fmt.Sprintf("raw-core/%d", size), func(b *testing.B) {
			b.SetBytes(int64(size))
			for i := 0; i < b.N; i++ {
				if err := rawa.Publish(callout.P2PSubjectPrefix+su.Key.String(), payload); err != nil {
					b.Fatal(err)
				}
			}
			waitN(b, coreGot, b.N)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
		b.Run(fmt.Sprintf("raw-jetstream/%d", size), func(b *testing.B) {
			b.SetBytes(int64(size))
			futs := make([]jetstream.PubAckFuture, 0, b.N)
			for i := 0; i < b.N; i++ {
				msg := nats.NewMsg(rawSubject)
				msg.Data = payload
				msg.Header.Set(jetstream.MsgIDHeader, NewMessageID().String())
				f, err := jsa.PublishMsgAsync(msg)
				if err != nil {
					b.Fatal(err)
				}
				futs = append(futs, f)
			}
			<-jsa.PublishAsyncComplete()
			for _, f := range futs {
				select {
				case err := <-f.Err():
					b.Fatalf("raw publish: %v", err)
				default:
				}
			}
			waitN(b, jsGot, b.N)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
		// Sealed throughput, interleaved with the crypto floor in chunks so
		// both see the same machine load: each chunk pipelines a batch of
		// sends (async acks) and waits until Bob stored every message, then
		// seals and opens as many messages back to back.
		b.Run(fmt.Sprintf("sealed/%d", size), func(b *testing.B) {
			b.SetBytes(int64(size))
			const chunk = 256
			var sealedTime, floorTime, sealedCPU, floorCPU time.Duration
			cpuOK := true
			pending := make([]*Pending, 0, chunk)
			for done := 0; done < b.N; {
				n := min(chunk, b.N-done)
				cpu0, ok0 := cputime.Process()
				start := time.Now()
				pending = pending[:0]
				for range n {
					p, err := alice.SendAsync(ctx, "bob", text)
					if err != nil {
						b.Fatal(err)
					}
					pending = append(pending, p)
				}
				waitN(b, bobGot, n)
				for _, p := range pending {
					if _, err := p.Wait(ctx); err != nil {
						b.Fatal(err)
					}
				}
				sealedTime += time.Since(start)
				cpu1, ok1 := cputime.Process()
				start = time.Now()
				for range n {
					e, err := Seal(au.Identity, rcpt, m)
					if err != nil {
						b.Fatal(err)
					}
					if _, err := opener.Open(e, au.Key); err != nil {
						b.Fatal(err)
					}
				}
				floorTime += time.Since(start)
				cpu2, ok2 := cputime.Process()
				sealedCPU, floorCPU = sealedCPU+cpu1-cpu0, floorCPU+cpu2-cpu1
				cpuOK = cpuOK && ok0 && ok1 && ok2
				done += n
			}
			b.ReportMetric(float64(b.N)/sealedTime.Seconds(), "msgs/s")
			b.ReportMetric(float64(b.N)/floorTime.Seconds(), "floor-msgs/s")
			b.ReportMetric(floorTime.Seconds()/sealedTime.Seconds(), "floor-ratio")
			if cpuOK && sealedCPU > 0 {
				// The same ratio in CPU time spent by the whole process
				// (both clients and the server): what it would be with no
				// spare core to run the two sides in parallel.
				b.ReportMetric(floorCPU.Seconds()/sealedCPU.Seconds(), "cpu-floor-ratio")
			}
		})

		// Latency of one message at a time, alternating a raw JetStream
		// round (publish, rawb's consumer receives) with a sealed one (Send
		// until Bob's Run handler has the stored message).
		b.Run(fmt.Sprintf("latency/%d", size), func(b *testing.B) {
			raw := make([]time.Duration, 0, b.N)
			sealed := make([]time.Duration, 0, b.N)
			for range b.N {
				msg := nats.NewMsg(rawSubject)
				msg.Data = payload
				msg.Header.Set(jetstream.MsgIDHeader, NewMessageID().String())
				start := time.Now()
				if _, err := jsa.PublishMsgAsync(msg); err != nil {
					b.Fatal(err)
				}
				waitN(b, jsGot, 1)
				raw = append(raw, time.Since(start))
				<-jsa.PublishAsyncComplete()

				start = time.Now()
				p, err := alice.SendAsync(ctx, "bob", text)
				if err != nil {
					b.Fatal(err)
				}
				waitN(b, bobGot, 1)
				sealed = append(sealed, time.Since(start))
				if _, err := p.Wait(ctx); err != nil {
					b.Fatal(err)
				}
			}
			rawP50 := percentile(raw, 0.50)
			p50 := percentile(sealed, 0.50)
			b.ReportMetric(rawP50, "raw-p50-µs")
			b.ReportMetric(p50, "p50-µs")
			b.ReportMetric(percentile(sealed, 0.99), "p99-µs")
			b.ReportMetric(p50/rawP50, "p50-ratio")
		})
	}
}

// waitN waits for n signals on ch, failing after a minute.
func waitN(b *testing.B, ch <-chan struct{}, n int) {
	timeout := time.After(time.Minute)
	for i := 0; i < n; i++ {
		select {
		case <-ch:
		case <-timeout:
			b.Fatalf("received %d of %d", i, n)
		}
	}
}

// percentile returns the p-th percentile of ds in µs (ds is sorted).
func percentile(ds []time.Duration, p float64) float64 {
	slices.Sort(ds)
	return float64(ds[min(len(ds)-1, int(p*float64(len(ds))))].Nanoseconds()) / 1e3
}
