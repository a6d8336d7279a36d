package handles

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/claims"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// TestResolverCheckClaims: the resolver checks a chain's claims with its
// Checker, or with a default one; a claim whose proof is another chain's
// fails with the reason.
func TestResolverCheckClaims(t *testing.T) {
	const (
		nsec = "nsec1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqps52s3re"
		npub = "npub1lycg5qvjtrp3qjf5f7zl382j9x6nrjz9sdhenvyxq8c3808qxmus6gq266"
	)
	now := time.Now()
	chainWithClaim := func(id *kez.Identity, proof func(*sigchain.State) string) *sigchain.State {
		eldest, err := sigchain.NewLink(id, nil, sigchain.TypeEldest,
			sigchain.EldestBody(id.PublicKey(), id.EncryptionKey(0).PublicKey(), 0, ""), now)
		if err != nil {
			t.Fatal(err)
		}
		st, err := sigchain.Verify([]*sigchain.Link{eldest})
		if err != nil {
			t.Fatal(err)
		}
		l, err := sigchain.NewLink(id, st, sigchain.TypeAddClaim, sigchain.AddClaimBody(claims.ServiceNostr, npub, proof(st)), now)
		if err != nil {
			t.Fatal(err)
		}
		if st, err = st.Extend([]*sigchain.Link{l}); err != nil {
			t.Fatal(err)
		}
		return st
	}
	eventFor := func(id *kez.Identity) func(*sigchain.State) string {
		return func(st *sigchain.State) string {
			ev, err := claims.NostrEvent(nsec, claims.NewStatement(id, claims.ServiceNostr, npub, st.Seqno()+1, st.Head().String()))
			if err != nil {
				t.Fatal(err)
			}
			return ev
		}
	}
	alice, _, _ := kez.NewIdentity()
	mallory, _, _ := kez.NewIdentity()
	st := chainWithClaim(alice, eventFor(alice))
	// Mallory copies alice's proof into her own chain.
	stolen := chainWithClaim(mallory, func(*sigchain.State) string { return st.Claims()[0].Proof })

	var r Resolver
	if rs := r.CheckClaims(context.Background(), st); len(rs) != 1 || rs[0].Status != claims.Verified {
		t.Fatalf("default checker: %+v", rs)
	}
	if rs := r.CachedClaims(st); rs[0].Status != claims.Verified {
		t.Fatalf("cached: %+v", rs)
	}
	if rs := r.CheckClaims(context.Background(), stolen); rs[0].Status != claims.Failed || !errors.Is(rs[0].Err, claims.ErrWrongKey) {
		t.Fatalf("stolen proof: %+v", rs)
	}
	given := &claims.Checker{}
	r2 := Resolver{Claims: given}
	r2.CheckClaims(context.Background(), st)
	if rs := given.Cached(st); rs[0].Status != claims.Verified {
		t.Fatalf("the resolver did not use its Checker: %+v", rs)
	}
}
