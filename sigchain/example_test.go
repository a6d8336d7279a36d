package sigchain_test

import (
	"fmt"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// A user starts a chain with an eldest link, claims a GitHub account, and a
// contact verifies the chain and reads who the key says it is.
func Example() {
	alice, err := kez.FromWords("abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon art")
	if err != nil {
		panic(err)
	}
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

	eldest, err := sigchain.NewLink(alice, nil, sigchain.TypeEldest,
		sigchain.EldestBody(alice.PublicKey(), alice.EncryptionKey(0).PublicKey(), 0, "alice@kez.lat"), now)
	if err != nil {
		panic(err)
	}
	st, err := sigchain.Verify([]*sigchain.Link{eldest})
	if err != nil {
		panic(err)
	}
	claim, err := sigchain.NewLink(alice, st, sigchain.TypeAddClaim,
		sigchain.AddClaimBody("github", "alice", "https://gist.github.com/alice/1"), now.Add(time.Minute))
	if err != nil {
		panic(err)
	}

	// A contact fetches both links (as bytes) and verifies them.
	var links []*sigchain.Link
	for _, b := range [][]byte{eldest.Bytes(), claim.Bytes()} {
		l, err := sigchain.ParseLink(b)
		if err != nil {
			panic(err)
		}
		links = append(links, l)
	}
	chain, err := sigchain.Verify(links)
	if err != nil {
		panic(err)
	}
	fmt.Println("handle:", chain.Handle())
	fmt.Println("seqno:", chain.Seqno())
	fmt.Println("encryption key generation:", chain.EncryptionGeneration())
	for _, c := range chain.Claims() {
		fmt.Println("claim:", c.Service, c.Identity)
	}
	// Output:
	// handle: alice@kez.lat
	// seqno: 2
	// encryption key generation: 0
	// claim: github alice
}
