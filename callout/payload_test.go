package callout_test

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/nats.go"
)

// TestUserPayloadLimit: nats-server does not apply the limits of a user
// JWT an auth callout issues (it clears the JWT before it sets the
// connection's limits), so the user account's limits block that
// NATSConfig renders is what holds. A client that ignores the limit and
// publishes more than the maximum to a subject it may publish (its own
// multi-recipient send, as a group send does) has its connection closed,
// and nothing reaches the chat account; a body of exactly the maximum
// passes, and nats.go learns the limit after login.
func TestUserPayloadLimit(t *testing.T) {
	c := newChatStack(t)
	gate, err := nats.Connect(c.srv.ClientURL(), c.keys.ProvisionerOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gate.Close)
	seen, err := gate.SubscribeSync(callout.MultiSendSubjectPrefix + ">")
	if err != nil {
		t.Fatal(err)
	}
	if err := gate.Flush(); err != nil {
		t.Fatal(err)
	}

	// nats.go: the INFO the server sends after the first PONG carries the
	// connection's limit, so after one more round trip the client knows it
	// and refuses a larger body itself.
	if err := c.aliceC.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := c.aliceC.MaxPayload(); got != callout.DefaultMaxPayload {
		t.Fatalf("nats.go learned a maximum payload of %d, want %d", got, callout.DefaultMaxPayload)
	}
	subj := callout.MultiSendSubjectPrefix + c.ak
	if err := c.aliceC.Publish(subj, make([]byte, callout.DefaultMaxPayload+1)); !errors.Is(err, nats.ErrMaxPayload) {
		t.Fatalf("nats.go published over the maximum: %v", err)
	}
	if err := c.aliceC.Publish(subj, bytes.Repeat([]byte{'y'}, callout.DefaultMaxPayload)); err != nil {
		t.Fatal(err)
	}
	if m, err := seen.NextMsg(10 * time.Second); err != nil || len(m.Data) != callout.DefaultMaxPayload {
		t.Fatalf("a body of the maximum: %v", err)
	}

	// A client that ignores the limit.
	for _, size := range []int{callout.DefaultMaxPayload + 1, 800 << 10} {
		rawPublish(t, c.srv.ClientURL(), c.bob, callout.MultiSendSubjectPrefix+c.bk, size)
		// The server logs why before it closes the connection.
		want := fmt.Sprintf("maximum payload exceeded: %d vs %d", size, callout.DefaultMaxPayload)
		if !strings.Contains(strings.Join(c.srv.Logs(), "\n"), want) {
			t.Errorf("%d bytes: the server did not log %q", size, want)
		}
	}
	// Nothing of bob's reached the chat account: alice's next message is
	// the next one there.
	if err := c.aliceC.Publish(subj, []byte("after")); err != nil {
		t.Fatal(err)
	}
	if m, err := seen.NextMsg(10 * time.Second); err != nil || string(m.Data) != "after" {
		t.Fatalf("after the refusals: %v (a message of %d bytes)", err, len(m.Data))
	}
}

// rawPublish logs in as id over the NATS client protocol by hand (a
// client that ignores the server's limits), publishes size bytes to subj
// and fails the test unless the server closes the connection.
func rawPublish(t *testing.T, url string, id *kez.Identity, subj string, size int) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "nats://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	info, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(info, "INFO ") {
		t.Fatalf("INFO: %q %v", info, err)
	}
	var fields struct {
		Nonce string `json:"nonce"`
	}
	if err := json.Unmarshal([]byte(strings.TrimPrefix(info, "INFO ")), &fields); err != nil {
		t.Fatal(err)
	}
	sig, err := id.SignNATSNonce([]byte(fields.Nonce))
	if err != nil {
		t.Fatal(err)
	}
	connect, _ := json.Marshal(map[string]any{
		"verbose": false, "pedantic": false, "protocol": 1, "headers": true,
		"nkey": id.PublicKey().String(), "sig": base64.RawURLEncoding.EncodeToString(sig),
	})
	if _, err := fmt.Fprintf(conn, "CONNECT %s\r\nPING\r\n", connect); err != nil {
		t.Fatal(err)
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("login: %v", err)
		}
		if strings.HasPrefix(line, "PONG") {
			break
		}
		if strings.HasPrefix(line, "-ERR") {
			t.Fatalf("login: %q", line)
		}
	}
	if _, err := fmt.Fprintf(conn, "PUB %s %d\r\n%s\r\nPING\r\n", subj, size, bytes.Repeat([]byte{'x'}, size)); err != nil {
		t.Fatal(err)
	}
	for {
		line, err := r.ReadString('\n')
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("%d bytes: the connection stayed open", size)
		}
		if err != nil {
			// Closed: with "-ERR" first, or reset while the body was
			// still arriving.
			return
		}
		if strings.HasPrefix(line, "PONG") {
			t.Fatalf("%d bytes: the server took the message", size)
		}
	}
}

// TestUserSubscriptionLimit: the user account's max_subs holds too
// (nats-server ignores the callout JWT's): the subscription over the
// limit is refused.
func TestUserSubscriptionLimit(t *testing.T) {
	c := newChatStack(t)
	for i := range callout.DefaultMaxSubscriptions + 1 {
		if _, err := c.aliceC.SubscribeSync("_INBOX." + c.ak + ".s" + strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.aliceC.Flush(); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case err := <-c.aliceC.errs:
			if strings.Contains(strings.ToLower(err.Error()), "maximum subscriptions") {
				return
			}
			t.Logf("other async error: %v", err)
		case <-timeout:
			t.Fatalf("%d subscriptions passed", callout.DefaultMaxSubscriptions+1)
		}
	}
}
