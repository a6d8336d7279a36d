package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/sigchain"
)

// sendHead sends the head of a POST of length bytes to path on the
// server at url, with Expect: 100-continue, and waits for "100 Continue":
// the handler is then reading the body, so the request is in flight.
func sendHead(t *testing.T, url, path string, length int) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: sig.example\r\nContent-Type: application/json\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", path, length)
	if _, err := conn.Write([]byte(head)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 100") {
		t.Fatalf("the server answered %q, %v; want 100 Continue", line, err)
	}
	if _, err := br.ReadString('\n'); err != nil { // the blank line after it
		t.Fatal(err)
	}
	return conn, br
}

// An append in flight when SIGTERM comes is stored and answered before
// the program exits, and the chain holds it afterwards.
func TestSIGTERMFinishesAppendsInFlight(t *testing.T) {
	db := filepath.Join(t.TempDir(), "sig.db")
	url, stop, _ := start(t, []string{"--listen", "127.0.0.1:0", "--db", db, "--no-log"}, nil)
	id := stacktest.Identity("erin")
	l, err := sigchain.NewLink(id, nil, sigchain.TypeEldest, sigchain.EldestBody(id.PublicKey(), id.EncryptionKey(0).PublicKey(), 0, "erin@kez.lat"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	body := l.Bytes()
	conn, br := sendHead(t, url, wire.ChainsPath+id.PublicKey().String()+"/links", len(body))
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	if _, err := conn.Write(body); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("the append in flight got no answer: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("the append in flight: %d", resp.StatusCode)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("graceful stop: %v", err)
	}
	url2, _, _ := start(t, []string{"--listen", "127.0.0.1:0", "--db", db, "--no-log"}, nil)
	if _, err := (&sigchain.Client{BaseURL: url2}).FetchVerified(context.Background(), id.PublicKey(), nil); err != nil {
		t.Fatalf("the chain after the restart: %v", err)
	}
}

// A client that never finishes its append cannot keep the program from
// exiting past --drain-timeout.
func TestDrainTimeoutBoundsAStuckAppend(t *testing.T) {
	db := filepath.Join(t.TempDir(), "sig.db")
	url, stop, _ := start(t, []string{"--listen", "127.0.0.1:0", "--db", db, "--no-log", "--drain-timeout", "300ms"}, nil)
	key := stacktest.Identity("frank").PublicKey().String()
	conn, _ := sendHead(t, url, wire.ChainsPath+key+"/links", 1000)
	if _, err := conn.Write([]byte(`{"key":`)); err != nil {
		t.Fatal(err)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	select {
	case err := <-stopped:
		if err == nil || !strings.Contains(err.Error(), "graceful shutdown") {
			t.Fatalf("run returned %v, want the shutdown cut short", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a stuck append held the program 20 s past a 300 ms drain timeout")
	}
}
