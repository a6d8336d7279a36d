package wire_test

import (
	"fmt"

	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/kez"
)

// A payload for each of two devices, and how a body too large for one
// request is split.
func ExampleEncodeMultiPayload() {
	var bob, carol kez.PublicKey
	bob[0], carol[0] = 1, 2
	copies := []wire.MultiCopy{{Device: bob, Payload: []byte("sealed for bob")}, {Device: carol, Payload: []byte("for carol")}}
	body, err := wire.EncodeMultiPayload(copies)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%q, %d recipients, %d bytes\n", body[:4], int(body[4])<<8|int(body[5]), len(body))
	back, err := wire.ParseMultiPayload(body, kez.PublicKey{9})
	if err != nil {
		panic(err)
	}
	fmt.Printf("%q %q\n", back[0].Payload, back[1].Payload)
	for _, run := range wire.SplitMultiPayload(copies, 60) {
		fmt.Println(len(run), "in a request of", wire.MultiPayloadBodySize(run), "bytes")
	}
	// Output:
	// "KZMP", 2 recipients, 101 bytes
	// "sealed for bob" "for carol"
	// 1 in a request of 56 bytes
	// 1 in a request of 51 bytes
}
