package claims_test

import (
	"context"
	"fmt"
	"time"

	"github.com/kez-lat/kez-chat/claims"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// A person claims a DNS name: the statement for the chain's next position
// goes into a TXT record of _kez.example.com, and into the add_claim
// link's proof.
func ExampleNewStatement() {
	alice, err := kez.FromWords("abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon art")
	if err != nil {
		panic(err)
	}
	eldest, err := sigchain.NewLink(alice, nil, sigchain.TypeEldest,
		sigchain.EldestBody(alice.PublicKey(), alice.EncryptionKey(0).PublicKey(), 0, "alice@kez.lat"), time.Unix(1767222000, 0))
	if err != nil {
		panic(err)
	}
	st, err := sigchain.Verify([]*sigchain.Link{eldest})
	if err != nil {
		panic(err)
	}
	statement := claims.NewStatement(alice, claims.ServiceDNS, "example.com", st.Seqno()+1, st.Head().String())
	fmt.Println("publish at _kez.example.com:")
	fmt.Println(statement.Text())

	link, err := sigchain.NewLink(alice, st, sigchain.TypeAddClaim,
		sigchain.AddClaimBody(claims.ServiceDNS, "example.com", statement.Text()), time.Unix(1767222060, 0))
	if err != nil {
		panic(err)
	}
	st, err = st.Extend([]*sigchain.Link{link})
	if err != nil {
		panic(err)
	}
	// What a checker does before it looks up the TXT record.
	claim := st.Claims()[0]
	parsed, err := claims.ParseStatement(claim.Proof, claim.Service, claim.Identity)
	if err != nil {
		panic(err)
	}
	fmt.Println("statement of this claim:", claims.CheckPosition(parsed, st.Key(), claim) == nil)
	// Output:
	// publish at _kez.example.com:
	// kez-claim=v1 UBEZRRVSGPSBY27Q4OUWJ2U276ERUCM7QPE5Y5BAWKI7BGJHDCPONM47 2 bafkreihjzjg3wnrjs4drdvnxu4dptaf6xotahr7ps2i2vjx65dx5fazw6a sgLJ6DhuDfiOZpZ2YDwDVEeZ8OETABv0t13Bjs_VOjgr_X0M0if90MqZ-qBXAOvgem3r_rc46cv3dqSPwd2oCw
	// statement of this claim: true
}

// A nostr claim carries its proof, an event signed by the nostr key, so it
// checks without any network.
func ExampleChecker_Check() {
	alice, _, err := kez.NewIdentity()
	if err != nil {
		panic(err)
	}
	now := time.Now()
	eldest, err := sigchain.NewLink(alice, nil, sigchain.TypeEldest,
		sigchain.EldestBody(alice.PublicKey(), alice.EncryptionKey(0).PublicKey(), 0, ""), now)
	if err != nil {
		panic(err)
	}
	st, err := sigchain.Verify([]*sigchain.Link{eldest})
	if err != nil {
		panic(err)
	}
	const (
		nsec = "nsec1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqps52s3re"
		npub = "npub1lycg5qvjtrp3qjf5f7zl382j9x6nrjz9sdhenvyxq8c3808qxmus6gq266"
	)
	statement := claims.NewStatement(alice, claims.ServiceNostr, npub, st.Seqno()+1, st.Head().String())
	event, err := claims.NostrEvent(nsec, statement)
	if err != nil {
		panic(err)
	}
	link, err := sigchain.NewLink(alice, st, sigchain.TypeAddClaim, sigchain.AddClaimBody(claims.ServiceNostr, npub, event), now)
	if err != nil {
		panic(err)
	}
	if st, err = st.Extend([]*sigchain.Link{link}); err != nil {
		panic(err)
	}

	var checker claims.Checker
	for _, r := range checker.Check(context.Background(), st) {
		fmt.Println(r.Claim.Service, r.Status)
	}
	// Output:
	// nostr verified
}
