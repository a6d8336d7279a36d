package jsleader_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/jsleader"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestLast(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := natstest.Run(t, natstest.JetStreamConf)
	js := natstest.ConnectJetStream(t, srv.ClientURL())
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatal(err)
	}
	for _, m := range []struct{ subj, data string }{{"t.a.1", "one"}, {"t.a.2", "two"}, {"t.b.1", "three"}} {
		if _, err := js.Publish(ctx, m.subj, []byte(m.data)); err != nil {
			t.Fatal(err)
		}
	}
	msg := nats.NewMsg("t.h")
	msg.Header.Set("KV-Operation", "DEL")
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}

	g := jsleader.NewGetter(js, "T")
	m, err := g.Last(ctx, "t.a.>") // a filter: the last of its subjects
	if err != nil || m == nil || m.Subject != "t.a.2" || string(m.Data) != "two" || m.Seq != 2 || m.Time.IsZero() || m.Header != nil {
		t.Fatalf("Last(t.a.>) = %+v, %v", m, err)
	}
	if m, err := g.Last(ctx, "t.none"); m != nil || err != nil {
		t.Fatalf("a subject with no message: %+v, %v", m, err)
	}
	m, err = g.Last(context.Background(), "t.h") // no deadline: the JetStream timeout bounds it
	if err != nil || m == nil {
		t.Fatal(err)
	}
	if h, err := nats.DecodeHeadersMsg(m.Header); err != nil || h.Get("KV-Operation") != "DEL" {
		t.Fatalf("headers %q: %v", m.Header, err)
	}
	if _, err := jsleader.NewGetter(js, "NOPE").Last(ctx, "t.a.1"); err == nil || !strings.Contains(err.Error(), "JetStream error") {
		t.Fatalf("a stream that does not exist: %v", err)
	}
}

func TestAPI(t *testing.T) {
	nc := &nats.Conn{} // only the JetStream options are read
	for _, tc := range []struct {
		js      func() (jetstream.JetStream, error)
		prefix  string
		timeout time.Duration // 0: any positive
	}{
		{func() (jetstream.JetStream, error) { return jetstream.New(nc) }, "$JS.API.", 0},
		{func() (jetstream.JetStream, error) { return jetstream.NewWithDomain(nc, "hub") }, "$JS.hub.API.", 0},
		{func() (jetstream.JetStream, error) { return jetstream.NewWithAPIPrefix(nc, "acct.JS.API") }, "acct.JS.API.", 0},
		{func() (jetstream.JetStream, error) {
			return jetstream.New(nc, jetstream.WithDefaultTimeout(2*time.Second))
		}, "$JS.API.", 2 * time.Second},
	} {
		js, err := tc.js()
		if err != nil {
			t.Fatal(err)
		}
		prefix, timeout := jsleader.API(js)
		if prefix != tc.prefix || timeout <= 0 || tc.timeout != 0 && timeout != tc.timeout {
			t.Errorf("API = %q, %s; want %q, %s", prefix, timeout, tc.prefix, tc.timeout)
		}
	}
}
