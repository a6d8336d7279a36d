package handles

import (
	"slices"
	"strings"
)

// reserved are names no one may claim: roles people trust, mail and web
// conventions, and names of the system itself. Kept sorted.
var reserved = []string{
	"abuse", "admin", "administrator", "all", "anonymous", "api", "billing",
	"everyone", "handles", "help", "here", "hostmaster", "info", "kez",
	"legal", "localhost", "mail", "moderator", "nats", "nobody", "noreply",
	"null", "official", "operator", "owner", "postmaster", "privacy", "root",
	"security", "server", "sigchain", "staff", "status", "support", "sysadmin",
	"system", "team", "webfinger", "webmaster", "wellknown", "www",
}

// IsReserved reports whether a local name is kept for the operator. The
// check ignores separators, so "ad.min" and "no-reply" are reserved too.
func IsReserved(name string) bool {
	_, found := slices.BinarySearch(reserved, Skeleton(name))
	return found
}

// ReservedNames returns the reserved local names, sorted.
func ReservedNames() []string { return slices.Clone(reserved) }

// CheckClaimable returns a *[HandleError] with [ReasonReserved] if h may
// not be claimed, else nil. h must come from [Rules.Parse].
func CheckClaimable(h Handle) error {
	if IsReserved(h.Name) {
		return herr(h.String(), ReasonReserved, "the name "+h.Name+" is reserved for the operator")
	}
	return nil
}

// Skeleton returns a name without the separators . - _ (docs/spec/handles.md,
// "Skeletons"). Two names with one skeleton ("alice", "al.ice", "a-lice")
// are too alike to belong to two people: every registry [Store] holds at
// most one name per skeleton and domain.
func Skeleton(name string) string {
	if !strings.ContainsAny(name, ".-_") {
		return name
	}
	return strings.Map(func(r rune) rune {
		if r == '.' || r == '-' || r == '_' {
			return -1
		}
		return r
	}, name)
}
