package kez_test

import (
	"fmt"
	"log"
	"strings"

	"github.com/kez-lat/kez-chat/kez"
)

// A new identity comes with its 24-word paper backup; the same words give
// the same identity back.
func ExampleNewIdentity() {
	id, words, err := kez.NewIdentity()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(words.Words()), "words")

	again, err := kez.FromWords(words.Phrase())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("same key:", again.PublicKey() == id.PublicKey())
	fmt.Println("nkey form:", strings.HasPrefix(id.PublicKey().String(), "U"))
	// Output:
	// 24 words
	// same key: true
	// nkey form: true
}

// Words from a paper backup (any case, numbered or not) restore an identity.
// Its key is at once the NATS user nkey and the libp2p PeerID.
func ExampleFromWords() {
	id, err := kez.FromWords(`
		1. abandon  2. amount  3. liar    4. amount   5. expire   6. adjust
		7. cage     8. candy   9. arch   10. gather  11. drum    12. bullet
		13. absurd 14. math   15. era    16. live    17. bid     18. rhythm
		19. alien  20. crouch 21. range  22. attend  23. journey 24. unaware`)
	if err != nil {
		log.Fatal(err)
	}
	k := id.PublicKey()
	fmt.Println(k)
	fmt.Println(k.PeerID())
	fmt.Println(k.Fingerprint())

	sig, _ := id.Sign(kez.ContextMessage, []byte("hello"))
	fmt.Println(k.Verify(kez.ContextMessage, []byte("hello"), sig))
	fmt.Println(k.Verify(kez.ContextHandleClaim, []byte("hello"), sig) != nil)
	// Output:
	// UBVBZNUTHDTVHMOZSAYLL6QRMPIF2VSCE5XXKBYZLM267E6TX3JHCCAR
	// 12D3KooWGxan8LHqRf67CudvDEKPVYzYRTm1w8cT3tMEucz5RJxx
	// 18165 26978 00453 48754 87022 68111
	// <nil>
	// true
}

// A mistyped word is named by its position, with suggestions.
func ExampleParseMnemonic() {
	_, err := kez.ParseMnemonic("abandon amount lair amount expire adjust cage candy arch gather drum bullet absurd math era live bid rhythm alien crouch range attend journey unaware")
	fmt.Println(err)
	// Output:
	// kez: word 3 ("lair") is not a backup word; did you mean "liar", "hair" or "pair"?
}

// Two people compare one safety number to check each other's key: each
// computes it from their own key and the one they hold for the other, and
// both see the same digits.
func ExampleSafetyNumber() {
	alice, err := kez.FromWords("abandon amount liar amount expire adjust cage candy arch gather drum bullet absurd math era live bid rhythm alien crouch range attend journey unaware")
	if err != nil {
		log.Fatal(err)
	}
	bob, err := kez.FromWords(strings.Repeat("zoo ", 23) + "vote")
	if err != nil {
		log.Fatal(err)
	}
	onAlicesSide := kez.SafetyNumber(alice.PublicKey(), bob.PublicKey())
	onBobsSide := kez.SafetyNumber(bob.PublicKey(), alice.PublicKey())
	fmt.Println(onAlicesSide)
	fmt.Println(onAlicesSide == onBobsSide)
	// Output:
	// 33283 76460 91579 79358 40140 00235 41943 70387 78572 29250 61130 43126
	// true
}

// A reader that takes a backup line by line checks each word as it comes.
func ExampleSplitMnemonic() {
	for _, w := range kez.SplitMnemonic("1. Abandon  2) amunt  # the rest on the next line") {
		fmt.Println(w, kez.IsWord(w), kez.SuggestWords(w, 1))
	}
	// Output:
	// abandon true [abandon]
	// amunt false [amount]
}
