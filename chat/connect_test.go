package chat_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
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

func ExampleConnect() {
	id, _, err := kez.NewIdentity() // usually kez.LoadIdentity
	if err != nil {
		panic(err)
	}
	nc, err := chat.Connect(context.Background(), "nats://127.0.0.1:4222", id)
	switch {
	case errors.Is(err, chat.ErrNotRegistered):
		fmt.Println("register a handle first")
	case errors.Is(err, chat.ErrUnreachable):
		fmt.Println("is NATS running?")
	case err != nil:
		fmt.Println(err)
	default:
		defer nc.Close()
	}
}
