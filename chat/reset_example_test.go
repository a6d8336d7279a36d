package chat_test

import (
	"fmt"
	"log"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/kez"
)

// A client that lost its sessions reports the messages it could not
// decrypt, per sender (set Config.OnSessionReset to be told); the
// notice's String is what kez prints.
func ExampleSessionReset() {
	alice, err := kez.ParsePublicKey("UBTQFKB5TOBFFKQVSNQUQKGMKBNPRTZ2L2FSANF7IHKP223KGWCTNYAW")
	if err != nil {
		log.Fatal(err)
	}
	cfg := chat.Config{OnSessionReset: func(r chat.SessionReset) { fmt.Println(r) }}
	cfg.OnSessionReset(chat.SessionReset{Peer: alice, Handle: "alice@kez.lat", Count: 3, Reset: true})
	cfg.OnSessionReset(chat.SessionReset{Peer: alice, Count: 1})
	// Output:
	// @alice@kez.lat: 3 messages could not be decrypted (session reset)
	// UBTQFKB5TOBFFKQVSNQUQKGMKBNPRTZ2L2FSANF7IHKP223KGWCTNYAW: 1 message could not be decrypted (session reset)
}
