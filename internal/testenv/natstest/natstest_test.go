package natstest_test

import (
	"context"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const jsConf = `
jetstream: enabled
port: 4222          # natstest moves it to a free port
`

// handle is what both server kinds offer.
type handle interface {
	ClientURL() string
	Restart()
}

func TestInProcess(t *testing.T) {
	s := natstest.Run(t, jsConf)
	if s.Server() == nil || !s.Server().JetStreamEnabled() {
		t.Fatal("JetStream is not enabled")
	}
	exercise(t, s)
}

func TestInProcessOptions(t *testing.T) {
	s := natstest.RunOptions(t, &server.Options{})
	exercise(t, s)
}

func TestProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the nats-server binary")
	}
	p := natstest.StartProcess(t, jsConf)
	if p.Port() == 0 || p.MonitorPort() == 0 || p.Port() == p.MonitorPort() {
		t.Fatalf("ports: client %d monitor %d", p.Port(), p.MonitorPort())
	}
	exercise(t, p)

	// A crash (SIGKILL) keeps what JetStream had synced: publish with an
	// acknowledgement, kill, restart, read it back.
	ctx := context.Background()
	nc := connect(t, p.ClientURL())
	js, _ := jetstream.New(nc)
	if _, err := js.Publish(ctx, "t.killed", []byte("survives")); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	p.Kill()
	if _, err := nats.Connect(p.ClientURL(), nats.NoReconnect()); err == nil {
		t.Fatal("connected to a killed server")
	}
	p.Restart()
	nc = connect(t, p.ClientURL())
	js, _ = jetstream.New(nc)
	st, err := js.Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetLastMsgForSubject(ctx, "t.killed")
	if err != nil {
		t.Fatalf("after kill and restart: %v", err)
	}
	if string(m.Data) != "survives" {
		t.Fatalf("after kill and restart: got %q", m.Data)
	}
}

func connect(t *testing.T, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// exercise checks core publish/subscribe, a JetStream round trip, and that
// a restart keeps the port and the stored message.
func exercise(t *testing.T, s handle) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	nc := connect(t, s.ClientURL())

	sub, err := nc.SubscribeSync("hello")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("hello", []byte("world")); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("pub/sub: %v", err)
	}
	if string(m.Data) != "world" {
		t.Fatalf("pub/sub: got %q", m.Data)
	}

	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "t.one", []byte("kept")); err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "T", jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	got, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for msg := range got.Messages() {
		if string(msg.Data()) != "kept" {
			t.Fatalf("fetched %q", msg.Data())
		}
		if err := msg.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	nc.Close()

	url := s.ClientURL()
	s.Restart()
	if s.ClientURL() != url {
		t.Fatalf("restart moved the server from %s to %s", url, s.ClientURL())
	}
	nc = connect(t, s.ClientURL())
	js, _ = jetstream.New(nc)
	st, err := js.Stream(ctx, "T")
	if err != nil {
		t.Fatalf("stream lost in restart: %v", err)
	}
	last, err := st.GetLastMsgForSubject(ctx, "t.one")
	if err != nil || string(last.Data) != "kept" {
		t.Fatalf("message lost in restart: %v", err)
	}
}

func TestJetStreamHelpers(t *testing.T) {
	srv := natstest.Run(t, natstest.JetStreamConf)
	js := natstest.ConnectJetStream(t, srv.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatal(err)
	}
	// The connection survives a restart; Eventually waits until it is back.
	srv.Restart()
	calls := 0
	natstest.Eventually(t, ctx, func(ctx context.Context) error {
		calls++
		_, err := js.Publish(ctx, "t.after", []byte("1"))
		return err
	})
	if calls == 0 {
		t.Fatal("Eventually never called f")
	}

	url, stop := natstest.StartForExample()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	ejs, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ejs.AccountInfo(ctx); err != nil {
		t.Fatalf("the example server has no JetStream: %v", err)
	}
	nc.Close()
	stop()
}

// TestFreePortNeverRepeats: FreePort never hands out a port twice in one
// process, although the kernel may offer a port it just took back.
func TestFreePortNeverRepeats(t *testing.T) {
	seen := map[int]bool{}
	for range 500 {
		p := natstest.FreePort(t)
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
	}
}
