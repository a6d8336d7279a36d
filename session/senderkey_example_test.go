package session_test

import (
	"errors"
	"fmt"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/session"
)

// A group message: alice's device makes a sender key for the group's
// current epoch and sends its distribution to each member device inside
// their pairwise sessions; then one envelope reaches them all. A member
// added later is given the key at its current iteration and cannot read
// what came before.
func ExampleSenderKey() {
	device, _, _ := kez.NewIdentity()
	var gid [32]byte // the group ID, from the group's membership chain
	key, err := session.NewSenderKey(nil, gid, 1, device.PublicKey())
	if err != nil {
		panic(err)
	}

	// Bob's device receives the distribution (chat kind group-key).
	wire, _ := key.Distribution().MarshalBinary()
	dist, err := session.ParseSenderKeyDistribution(wire)
	if err != nil {
		panic(err)
	}
	bob := session.NewReceiverKey(dist)

	first, _ := key.Seal([]byte("hello group"))
	carol := session.NewReceiverKey(key.Distribution()) // added after the first message
	second, _ := key.Seal([]byte("welcome carol"))

	h, _ := session.ParseGroupHeader(second)
	fmt.Println("epoch", h.Epoch, "iteration", h.Iteration)
	for _, env := range [][]byte{first, second} {
		msg, err := bob.Open(env)
		fmt.Printf("bob: %q %v\n", msg, err)
	}
	_, err = carol.Open(first)
	fmt.Println("carol, first:", errors.Is(err, session.ErrOlderThanKey))
	msg, _ := carol.Open(second)
	fmt.Printf("carol, second: %q\n", msg)
	_, err = bob.Open(second)
	fmt.Println("bob again:", errors.Is(err, session.ErrReplay))
	// Output:
	// epoch 1 iteration 1
	// bob: "hello group" <nil>
	// bob: "welcome carol" <nil>
	// carol, first: true
	// carol, second: "welcome carol"
	// bob again: true
}
