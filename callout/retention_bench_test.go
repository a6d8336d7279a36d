package callout_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// BenchmarkAckWithConsumers measures what reading a message costs the
// broker as users grow: publish, fetch and acknowledge one user's
// messages on an inbox stream that holds one consumer per user. Under
// interest retention nats-server asks every consumer about every
// acknowledged message; under limits retention (the stream's layout) the
// acknowledgement costs the same whatever the users, and read mail goes
// by a filtered purge per fetched batch, as the gate does it.
//
//	go test ./callout -run - -bench AckWithConsumers -benchtime 20000x
func BenchmarkAckWithConsumers(b *testing.B) {
	for _, users := range []int{1, 1000} {
		for _, retention := range []jetstream.RetentionPolicy{jetstream.InterestPolicy, jetstream.LimitsPolicy} {
			benchAcks(b, users, retention)
		}
	}
}

func benchAcks(b *testing.B, users int, retention jetstream.RetentionPolicy) {
	s := natstest.Run(b, "jetstream: {}\n")
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	cfg := callout.InboxConfig{MaxMsgsPerSubject: 1 << 30}.StreamConfig()
	cfg.Retention = retention
	st, err := js.CreateStream(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	me := newIdentity(b).PublicKey()
	for i := range users {
		k := me
		if i > 0 {
			k = newIdentity(b).PublicKey()
		}
		if _, err := st.CreateOrUpdateConsumer(ctx, callout.ConsumerConfig(k, time.Minute)); err != nil {
			b.Fatal(err)
		}
	}
	c, err := st.Consumer(ctx, callout.ConsumerName(me))
	if err != nil {
		b.Fatal(err)
	}
	subject := callout.InboxSubjectPrefix + me.String() + "." + me.String()
	body := make([]byte, 256)
	b.Run(fmt.Sprintf("users=%d/%s", users, retention), func(b *testing.B) {
		for range b.N {
			if _, err := js.PublishAsync(subject, body); err != nil {
				b.Fatal(err)
			}
		}
		<-js.PublishAsyncComplete()
		b.ResetTimer()
		for done := 0; done < b.N; {
			batch, err := c.Fetch(min(512, b.N-done))
			if err != nil {
				b.Fatal(err)
			}
			for m := range batch.Messages() {
				if err := m.Ack(); err != nil {
					b.Fatal(err)
				}
				done++
			}
			if err := batch.Error(); err != nil {
				b.Fatal(err)
			}
			if retention == jetstream.LimitsPolicy {
				removeRead(b, st, c, me.String())
			}
		}
		// Until the broker has removed every message.
		for {
			info, err := st.Info(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if info.State.Msgs == 0 {
				break
			}
			if retention == jetstream.LimitsPolicy {
				removeRead(b, st, c, me.String())
			}
		}
	})
}

// removeRead purges key's inbox up to its consumer's acknowledgement
// floor, as the chat-server's gate does.
func removeRead(b *testing.B, st jetstream.Stream, c jetstream.Consumer, key string) {
	ctx := context.Background()
	info, err := c.Info(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if f := info.AckFloor.Stream; f > 0 {
		if err := st.Purge(ctx, jetstream.WithPurgeSubject(callout.InboxSubjectPrefix+key+".>"), jetstream.WithPurgeSequence(f+1)); err != nil {
			b.Fatal(err)
		}
	}
}
