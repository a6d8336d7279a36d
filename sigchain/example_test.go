package sigchain_test

import (
	"errors"
	"fmt"
	"strings"
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

// A new device makes a link request and shows its code; the person's
// device fetches the request by that code, checks it, and adds the device
// to the chain.
func ExampleNewLinkRequest() {
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
	chain, err := sigchain.Verify([]*sigchain.Link{eldest})
	if err != nil {
		panic(err)
	}

	// On the new device: a fresh key, a request, a code to show.
	laptop, _, err := kez.NewIdentity()
	if err != nil {
		panic(err)
	}
	req, err := sigchain.NewLinkRequest(laptop, "laptop", now)
	if err != nil {
		panic(err)
	}
	shown := req.Code().String()

	// On Alice's device: the code as typed, the request as fetched.
	typed, err := sigchain.ParseLinkCode(strings.ToLower(strings.ReplaceAll(shown, "-", " ")))
	if err != nil {
		panic(err)
	}
	fetched, err := sigchain.ParseLinkRequest(req.Bytes())
	if err != nil {
		panic(err)
	}
	fmt.Println("code matches:", fetched.Code() == typed)
	fmt.Println("fresh:", fetched.CheckFresh(now.Add(time.Minute)) == nil)
	fmt.Println("valid for:", fetched.Expires().Sub(fetched.Created()))

	add, err := sigchain.NewLink(alice, chain, sigchain.TypeAddDevice, sigchain.AddDeviceBody(fetched), now.Add(time.Minute))
	if err != nil {
		panic(err)
	}
	chain, err = chain.Extend([]*sigchain.Link{add})
	if err != nil {
		panic(err)
	}
	for _, d := range chain.Devices() {
		fmt.Println("device:", d.Name, d.Primary, d.Key == laptop.PublicKey())
	}
	// Output:
	// code matches: true
	// fresh: true
	// valid for: 10m0s
	// device: primary true false
	// device: laptop false true
}

// A code read back from what a person typed: case, spaces and dashes do
// not matter, and the check character catches a typo.
func ExampleParseLinkCode() {
	c, err := sigchain.ParseLinkCode("33ce nq8b smh4 w1gf 9")
	fmt.Println(c, err)
	_, err = sigchain.ParseLinkCode("33CE-NQ8B-SMH4-W1GE-9")
	fmt.Println(errors.Is(err, sigchain.ErrBadLinkCode))
	// Output:
	// 33CE-NQ8B-SMH4-W1GF-9 <nil>
	// true
}

// What a QR code of a link code holds, and reading it back: a scanner's
// text is a code too.
func ExampleLinkCode_URI() {
	c, _ := sigchain.ParseLinkCode("33CE-NQ8B-SMH4-W1GF-9")
	fmt.Println(c.URI())
	back, err := sigchain.ParseLinkCode(c.URI())
	fmt.Println(back == c, err)
	// Output:
	// KEZ-LINK:33CE-NQ8B-SMH4-W1GF-9
	// true <nil>
}
