package session_test

import (
	"fmt"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/session"
)

// A whole session: bob publishes a prekey, alice starts a session to it,
// bob accepts her handshake, and they talk; each side stores its state
// between messages.
func Example() {
	alice, _, _ := kez.NewIdentity()
	bob, _, _ := kez.NewIdentity()
	now := time.Now()

	// Bob makes a prekey and publishes prekey.Public (on the sig-server).
	prekey, err := session.NewPrekey(nil, bob, 1, now, 14*24*time.Hour)
	if err != nil {
		panic(err)
	}
	lookup := func(id uint32) (*session.PrekeyPrivate, bool) { return prekey, id == prekey.Public.ID }

	// Alice fetched and verified it; she starts a session and seals.
	if err := prekey.Public.Verify(bob.PublicKey(), now); err != nil {
		panic(err)
	}
	a, err := session.Initiate(nil, alice, &prekey.Public, now)
	if err != nil {
		panic(err)
	}
	hs, _ := a.Seal(nil, []byte("hello bob"))
	h, _ := session.ParseHeader(hs)
	fmt.Println("alice sends type", h.Type)

	// Bob accepts the handshake.
	b, msg, err := session.Accept(bob, hs, lookup, now)
	if err != nil {
		panic(err)
	}
	fmt.Printf("bob reads %q\n", msg)

	// Bob answers; alice opens it with her stored state.
	reply, _ := b.Seal(nil, []byte("hi alice"))
	stored, _ := a.MarshalBinary()
	a, err = session.ParseSession(stored)
	if err != nil {
		panic(err)
	}
	msg, err = a.Open(reply, now)
	if err != nil {
		panic(err)
	}
	fmt.Printf("alice reads %q\n", msg)

	next, _ := a.Seal(nil, []byte("how are you?"))
	h, _ = session.ParseHeader(next)
	fmt.Println("alice sends type", h.Type, "in the same session:", h.SessionID == b.ID())
	msg, _ = b.Open(next, now)
	fmt.Printf("bob reads %q\n", msg)
	_, err = b.Open(next, now)
	fmt.Println(err)
	// Output:
	// alice sends type 1
	// bob reads "hello bob"
	// alice reads "hi alice"
	// alice sends type 2 in the same session: true
	// bob reads "how are you?"
	// session: message already received (replay or duplicate): message 0 of this chain was already received
}
