package handles

import "slices"

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

// reservedSkeletons are the skeletons of the reserved names, sorted, so
// that a look-alike of a reserved name ("adm1n", "r00t") is reserved too.
var reservedSkeletons = func() []string {
	sk := make([]string, len(reserved))
	for i, n := range reserved {
		sk[i] = Skeleton(n)
	}
	slices.Sort(sk)
	return slices.Compact(sk)
}()

// IsReserved reports whether a local name is kept for the operator. The
// check compares skeletons (see [Skeleton]), so "ad.min", "no-reply" and
// "adm1n" are reserved too.
func IsReserved(name string) bool {
	_, found := slices.BinarySearch(reservedSkeletons, Skeleton(name))
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
