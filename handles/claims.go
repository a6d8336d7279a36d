package handles

import (
	"context"

	"github.com/kez-lat/kez-chat/claims"
	"github.com/kez-lat/kez-chat/sigchain"
)

// CheckClaims checks the identity claims of st, a verified chain (a
// [Resolved]'s State), live or from the cache: one result per active
// claim, oldest first (docs/spec/claims.md). See [claims.Checker.Check].
func (r *Resolver) CheckClaims(ctx context.Context, st *sigchain.State) []claims.Result {
	return r.claimChecker().Check(ctx, st)
}

// CachedClaims returns what is known of the claims of st without
// contacting anything. See [claims.Checker.Cached].
func (r *Resolver) CachedClaims(st *sigchain.State) []claims.Result {
	return r.claimChecker().Cached(st)
}

// claimChecker returns Claims, or the default Checker.
func (r *Resolver) claimChecker() *claims.Checker {
	if r.Claims != nil {
		return r.Claims
	}
	r.claimsOnce.Do(func() {
		r.claims = &claims.Checker{LocalDomains: r.LocalDomains, Clock: r.Now}
	})
	return r.claims
}
