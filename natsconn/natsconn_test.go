package natsconn_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/natsconn"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// calloutServer runs a real nats-server with the callout snippet and a
// callout service, and returns it with the directory the service uses.
func calloutServer(t *testing.T) (*natstest.Server, *callout.StaticDirectory) {
	t.Helper()
	keys, err := callout.GenerateKeys()
	if err != nil {
		t.Fatal(err)
	}
	conf, err := callout.NATSConfig(keys, callout.ConfigOptions{})
	if err != nil {
		t.Fatal(err)
	}
	srv := natstest.Run(t, conf)
	dir := &callout.StaticDirectory{}
	svc, err := callout.New(callout.Config{Keys: keys, Directory: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(srv.ClientURL(), append(keys.ServiceOptions(), nats.MaxReconnects(-1), nats.ReconnectWait(10*time.Millisecond))...)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Listen(nc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = svc.Close()
		nc.Close()
	})
	return srv, dir
}

func identity(t *testing.T) *kez.Identity {
	t.Helper()
	id, _, err := kez.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestConnect(t *testing.T) {
	srv, dir := calloutServer(t)
	alice := identity(t)
	dir.Set(alice.PublicKey(), callout.Entry{Handle: "alice@kez.lat"})
	// opts override the defaults: here the connection's name.
	nc, err := natsconn.Connect(context.Background(), srv.ClientURL(), alice, nats.Name("kez-chat"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	key := alice.PublicKey().String()
	if natsconn.InboxPrefix(alice.PublicKey()) != "_INBOX."+key {
		t.Errorf("InboxPrefix = %q", natsconn.InboxPrefix(alice.PublicKey()))
	}
	// Replies use the private prefix, the only one alice may subscribe to:
	// a request to herself on her signalling subject round-trips.
	sub, err := nc.Subscribe(callout.P2PSubjectPrefix+key, func(m *nats.Msg) { _ = m.Respond([]byte("here")) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	reply, err := nc.Request(callout.P2PSubjectPrefix+key, nil, 5*time.Second)
	if err != nil || string(reply.Data) != "here" {
		t.Fatalf("request on the private inbox: %v", err)
	}
	cz, err := srv.Server().Connz(&server.ConnzOptions{Username: true, Account: callout.DefaultUserAccount})
	if err != nil {
		t.Fatal(err)
	}
	if len(cz.Conns) != 1 || cz.Conns[0].AuthorizedUser != key || cz.Conns[0].Name != "kez-chat" {
		t.Fatalf("connections %+v", cz.Conns)
	}
}

func TestConnectNotRegistered(t *testing.T) {
	srv, _ := calloutServer(t)
	_, err := natsconn.Connect(context.Background(), srv.ClientURL(), identity(t))
	if !errors.Is(err, natsconn.ErrNotRegistered) || !errors.Is(err, nats.ErrAuthorization) || errors.Is(err, natsconn.ErrUnreachable) {
		t.Fatalf("got %v, want ErrNotRegistered", err)
	}
	t.Log(err)
}

func TestConnectUnreachable(t *testing.T) {
	url := fmt.Sprintf("nats://127.0.0.1:%d", natstest.FreePort(t))
	_, err := natsconn.Connect(context.Background(), url, identity(t))
	if !errors.Is(err, natsconn.ErrUnreachable) || errors.Is(err, natsconn.ErrNotRegistered) {
		t.Fatalf("got %v, want ErrUnreachable", err)
	}
	t.Log(err)
}

// TestConnectContext: a server that accepts TCP but never speaks would
// hold Connect for ConnectTimeout; the context ends it at once.
func TestConnectContext(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	t.Cleanup(func() {
		l.Close()
		select {
		case c := <-accepted:
			c.Close()
		default:
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := natsconn.Connect(ctx, "nats://"+l.Addr().String(), identity(t))
		errc <- err
	}()
	c := <-accepted // Connect is now waiting for the server's INFO
	accepted <- c
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}

func TestConnectReconnectsAfterRestart(t *testing.T) {
	srv, dir := calloutServer(t)
	alice := identity(t)
	dir.Set(alice.PublicKey(), callout.Entry{Handle: "alice@kez.lat"})
	reconnected := make(chan struct{}, 1)
	nc, err := natsconn.Connect(context.Background(), srv.ClientURL(), alice,
		nats.ReconnectWait(10*time.Millisecond),
		nats.ReconnectHandler(func(*nats.Conn) { reconnected <- struct{}{} }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	srv.Restart()
	select {
	case <-reconnected:
	case <-time.After(30 * time.Second):
		t.Fatal("no reconnect after the server restarted")
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// lineWriter hands each write (one log record) to a channel.
type lineWriter chan string

func (w lineWriter) Write(p []byte) (int, error) {
	w <- string(p)
	return len(p), nil
}

func TestLoggerLogsDisconnectAndReconnect(t *testing.T) {
	srv, dir := calloutServer(t)
	alice := identity(t)
	dir.Set(alice.PublicKey(), callout.Entry{Handle: "alice@kez.lat"})
	lines := make(lineWriter, 16)
	log := slog.New(slog.NewTextHandler(lines, nil))
	nc, err := natsconn.Connect(context.Background(), srv.ClientURL(), alice,
		nats.ReconnectWait(10*time.Millisecond), natsconn.Logger(log.With("who", "alice")))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	srv.Restart()
	for _, want := range []string{"disconnected from NATS", "reconnected to NATS"} {
		select {
		case l := <-lines:
			if !strings.Contains(l, want) || !strings.Contains(l, "who=alice") {
				t.Errorf("logged %q, want %q", l, want)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("nothing logged; want %q", want)
		}
	}
}

func TestConnectNeedsIdentity(t *testing.T) {
	if _, err := natsconn.Connect(context.Background(), "nats://127.0.0.1:1", nil); err == nil {
		t.Fatal("connected without an identity")
	}
}

// A program of its own (a bot, a bridge) logs in with the user's key,
// names its connection and sends its reconnect log lines to its logger;
// it may subscribe for replies only under InboxPrefix.
func Example() {
	// A deployment for the example; yours is the operator's NATS_URL.
	st, users, stop := stacktest.ForExample(stacktest.Options{}, "alice")
	defer stop()
	id := users[0].Identity // usually kez.LoadIdentity

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	log := slog.Default().With("program", "kez-bridge")
	nc, err := natsconn.Connect(ctx, st.NATSURL, id, nats.Name("kez-bridge"), natsconn.Logger(log))
	if err != nil {
		fmt.Println("no NATS login; not registered:", errors.Is(err, natsconn.ErrNotRegistered))
		return
	}
	defer nc.Close()
	fmt.Println("logged in; replies under", natsconn.InboxPrefix(id.PublicKey())+".>")
	// Output:
	// logged in; replies under _INBOX.UBTQFKB5TOBFFKQVSNQUQKGMKBNPRTZ2L2FSANF7IHKP223KGWCTNYAW.>
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":                          "nats://127.0.0.1:4222",
		"nats://alice:s3cret@nats.example:4222":          "nats://redacted@nats.example:4222",
		"tls://tok@a:4222, nats://b:4222,nats://u:p@c:1": "tls://redacted@a:4222,nats://b:4222,nats://redacted@c:1",
		"127.0.0.1:4222":                                 "127.0.0.1:4222",
	} {
		if got := natsconn.RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
