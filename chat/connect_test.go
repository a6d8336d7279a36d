package chat_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"testing"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/natsconn"
)

// chat.Connect is natsconn.Connect (tested there): its errors are the same
// values, so callers may test either.
func TestConnectErrorsAreNatsconns(t *testing.T) {
	id, _, err := kez.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("nats://127.0.0.1:%d", natstest.FreePort(t))
	_, err = chat.Connect(context.Background(), url, id)
	if !errors.Is(err, chat.ErrUnreachable) || !errors.Is(err, natsconn.ErrUnreachable) || errors.Is(err, chat.ErrNotRegistered) {
		t.Fatalf("got %v, want ErrUnreachable", err)
	}
	if chat.ErrNotRegistered != natsconn.ErrNotRegistered || chat.ConnectTimeout != natsconn.ConnectTimeout {
		t.Error("chat's login errors or timeout are not natsconn's")
	}
	if _, err := chat.Connect(context.Background(), "nats://127.0.0.1:1", nil); err == nil {
		t.Fatal("connected without an identity")
	}
}

// A registered key logs in; a key that holds no handle is refused.
func ExampleConnect() {
	// A deployment for the example; yours is the operator's NATS_URL.
	st, users, stop := stacktest.ForExample(stacktest.Options{}, "alice")
	defer stop()
	alice := users[0].Identity // usually kez.LoadIdentity

	ctx := context.Background()
	nc, err := chat.Connect(ctx, st.NATSURL, alice)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	fmt.Println("alice is logged in:", nc.IsConnected())

	stranger, _, _ := kez.NewIdentity()
	_, err = chat.Connect(ctx, st.NATSURL, stranger)
	switch {
	case errors.Is(err, chat.ErrNotRegistered):
		fmt.Println("a key without a handle is refused: register it first")
	case errors.Is(err, chat.ErrUnreachable):
		fmt.Println("is NATS running?")
	}
	// Output:
	// alice is logged in: true
	// a key without a handle is refused: register it first
}
