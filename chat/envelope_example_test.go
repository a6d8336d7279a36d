package chat_test

import (
	"fmt"
	"log"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/kez"
)

// Alice seals a message to Bob; Bob opens it. In a real client Bob's keys
// come from his verified sigchain, and the expected sender from the NATS
// subject the envelope arrived on.
func ExampleSeal() {
	alice, err := kez.FromWords("stairs napkin potato shoulder orient doll afford today physical elephant smoke erase seed smart crew sudden wagon convince episode device shoot prize hover obtain")
	if err != nil {
		log.Fatal(err)
	}
	bob, err := kez.FromWords("hat hollow grunt simple lion rent twenty push point suit heart pelican vacant effort pair slight sweet panic wet start glad govern confirm usual")
	if err != nil {
		log.Fatal(err)
	}

	// Alice's side.
	to := chat.Recipient{Key: bob.PublicKey(), EncryptionKey: bob.EncryptionKey(0).PublicKey(), Generation: 0}
	envelope, err := chat.Seal(alice, to, chat.Message{Kind: chat.KindText, Body: []byte("hello bob")})
	if err != nil {
		log.Fatal(err)
	}

	// Bob's side: one Opener for all incoming envelopes.
	inbox, err := chat.NewOpener(bob, &chat.OpenOptions{Generations: []uint32{0}})
	if err != nil {
		log.Fatal(err)
	}
	m, err := inbox.Open(envelope, alice.PublicKey())
	if err != nil {
		log.Fatal(err)
	}
	if m.From == alice.PublicKey() {
		fmt.Printf("%s from alice: %s\n", m.Kind, m.Body)
	}

	// Anyone else, or any changed byte, is refused.
	envelope[len(envelope)-1] ^= 1
	_, err = inbox.Open(envelope, alice.PublicKey())
	fmt.Println(err)
	// Output:
	// text from alice: hello bob
	// chat: envelope does not decrypt: it was altered or sealed to another key
}
