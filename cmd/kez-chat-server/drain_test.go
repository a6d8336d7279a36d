package main

import (
	"bufio"
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/natsconn"
	"github.com/nats-io/nats.go"
)

// programEnv starts NATS with the snippet for a fresh keys folder and a
// sig-server, and returns NATS and the program's environment for them
// (the keys, a registry file).
func programEnv(t *testing.T) (*natstest.Server, map[string]string) {
	t.Helper()
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	ns := natstest.Run(t, natsConfigOutput(t, []string{"--keys", keys}, nil))
	return ns, map[string]string{"KEZ_SIG_SERVER": startSig(t), "NATS_URL": ns.ClientURL(), "KEZ_CHAT_DB": filepath.Join(dir, "chat.db"), "KEZ_CHAT_KEYS": keys}
}

// Two replicas of the program share the keys and the registry; the
// first is stopped as SIGTERM stops it. Logins go on through the other
// while it drains, and it exits cleanly, logging the drain.
func TestSIGTERMDrainsToTheOtherReplica(t *testing.T) {
	ns, env := programEnv(t)
	sigURL := env["KEZ_SIG_SERVER"]
	args := []string{"--listen", "127.0.0.1:0", "--domain", "chat.example", "--log-format", "json", "--drain-timeout", "20s"}
	first := startReady(t, args, env)
	second := startReady(t, args, env)

	ctx := context.Background()
	id := stacktest.Identity("dave")
	h := handles.Handle{Name: "dave", Domain: "chat.example"}
	if _, err := handles.Register(ctx, id, h, handles.RegisterOptions{ServerURL: second.base, SigServerURL: sigURL}); err != nil {
		t.Fatal(err)
	}
	first.cancel()
	for i := range 20 {
		nc, err := natsconn.Connect(ctx, ns.ClientURL(), id, nats.NoReconnect())
		if err != nil {
			t.Fatalf("login %d while a replica stopped: %v", i, err)
		}
		nc.Close()
	}
	<-first.done
	if first.err != nil {
		t.Fatalf("the stopped replica: %v\n%s", first.err, first.logs)
	}
	for _, want := range []string{`"msg":"draining","timeout":"20s"`, `"msg":"chat-server drained"`, `"msg":"chat-server stopped"`} {
		if !strings.Contains(first.logs.String(), want) {
			t.Errorf("the stopped replica's log lacks %s", want)
		}
	}
	if strings.Contains(second.logs.String(), `"msg":"chat-server draining`) {
		t.Error("the other replica drained too")
	}
}

// A client that holds a request open (a claim whose body never comes)
// cannot keep the program from exiting past --drain-timeout.
func TestDrainTimeoutBoundsAStuckClient(t *testing.T) {
	_, env := programEnv(t)
	srv := startReady(t, []string{"--listen", "127.0.0.1:0", "--domain", "chat.example", "--drain-timeout", "300ms"}, env)
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	// With Expect: 100-continue the server says "100 Continue" once the
	// handler reads the body: then the request is in flight for sure.
	if _, err := conn.Write([]byte("POST /v1/handles HTTP/1.1\r\nHost: chat.example\r\nContent-Type: application/json\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100") {
		t.Fatalf("the server answered %q, %v; want 100 Continue", line, err)
	}
	if _, err := conn.Write([]byte(`{"handle":`)); err != nil {
		t.Fatal(err)
	}
	srv.cancel()
	select {
	case <-srv.done:
	case <-time.After(20 * time.Second):
		t.Fatal("a stuck request held the program 20 s past a 300 ms drain timeout")
	}
	if srv.err == nil || !strings.Contains(srv.err.Error(), "graceful shutdown") {
		t.Fatalf("run returned %v, want the HTTP shutdown cut short", srv.err)
	}
}
