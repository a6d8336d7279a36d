package group_test

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/kez-lat/kez-chat/group"
	"github.com/kez-lat/kez-chat/kez"
)

// Example makes a group, adds a member, verifies the chain as a member's
// client does and pins it.
func Example() {
	alice, _ := kez.FromSeed(bytes.Repeat([]byte{1}, 64))
	bob, _ := kez.FromSeed(bytes.Repeat([]byte{2}, 64))
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

	create, err := group.NewCreate(alice, alice.PublicKey(), "friends@kez.lat", "alice@kez.lat", "Friends", now)
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	st, _ := group.Verify(ctx, [][]byte{create.Bytes()}, nil)
	add, err := group.NewLink(alice, alice.PublicKey(), st, group.TypeAdd,
		group.AddBody([]group.NewMember{{Key: bob.PublicKey(), Handle: "bob@kez.lat", Role: group.RoleMember}}), now.Add(time.Minute))
	if err != nil {
		panic(err)
	}

	// A member's client verifies the links the sig-server gives it. No
	// link here is signed by a device, so no DeviceChecker is needed.
	st, err = group.Verify(ctx, [][]byte{create.Bytes(), add.Bytes()}, nil,
		group.WithClock(func() time.Time { return now.Add(time.Hour) }))
	if err != nil {
		panic(err)
	}
	for _, m := range st.Members() {
		fmt.Println(m.Handle, m.Role, "since", m.Since)
	}
	fmt.Println("epoch", st.Epoch(), "head", st.Head())
	fmt.Println("pin ok:", st.CheckPin(st.Pin()) == nil)
	// Output:
	// alice@kez.lat owner since 1
	// bob@kez.lat member since 2
	// epoch 2 head bafkreigtqmrxkdxaqndrtroaci2egv37e2xoxz4wxvjnkxtp7zzjg43nyy
	// pin ok: true
}
