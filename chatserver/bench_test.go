package chatserver_test

import (
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/nats-io/nats.go"
)

// BenchmarkLogin measures a user's NATS login through the chat-server's
// auth callout (nonce check, SQLite registry lookup, signed user JWT,
// sealed response) against the raw floor in the same run: a plain nkey
// login that the server checks itself (the callout service user), on the
// same in-process server. Each iteration connects and closes.
func BenchmarkLogin(b *testing.B) {
	st := stacktest.Start(b, stacktest.Options{})
	alice := st.NewUser(b, "alice")
	keys := st.Chat.Keys()
	b.Run("baseline-nkey", func(b *testing.B) {
		for b.Loop() {
			nc, err := nats.Connect(st.NATSURL, append(keys.ServiceOptions(), nats.Timeout(5*time.Second), nats.NoReconnect())...)
			if err != nil {
				b.Fatal(err)
			}
			nc.Close()
		}
	})
	b.Run("callout", func(b *testing.B) {
		for b.Loop() {
			nc, err := login(alice.Identity, st.NATSURL)
			if err != nil {
				b.Fatal(err)
			}
			nc.Close()
		}
	})
}
