// Package filewords words what package files reports for people: byte
// counts, the path a fetched file took, and the facts of a fetch that
// failed. The kez command and its full-screen client ("kez ui") share
// these sentences; each adds the advice that fits it (a flag to pass, a
// key to press).
package filewords

import (
	"fmt"
	"strings"
	"time"

	"github.com/kez-lat/kez-chat/files"
)

// Size writes a byte count in binary units: "512 B", "1.2 MiB".
func Size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// Fetched says which path a fetched file took, e.g. `Fetched
// "notes.txt" (1.2 MiB) from alice@kez.lat over a hole-punched
// connection.`, with the share of each route when it took more than one.
func Fetched(f *files.Fetched, who string) string {
	s := fmt.Sprintf("Fetched %q (%s) from %s %s", f.Name, Size(f.Size), who, Route(f, f.Route))
	if len(f.Routes) > 1 {
		var parts []string
		for _, r := range []files.Route{files.RouteDirect, files.RouteHolePunched, files.RouteRelayed} {
			if n, ok := f.Routes[r]; ok {
				parts = append(parts, Size(n)+" "+Route(f, r))
			}
		}
		s += " (" + strings.Join(parts, ", ") + ")"
	}
	return s + "."
}

// Route words one route of f: "directly", "over a hole-punched
// connection", "through the relay ADDR".
func Route(f *files.Fetched, r files.Route) string {
	switch r {
	case files.RouteHolePunched:
		return "over a hole-punched connection"
	case files.RouteRelayed:
		if f.Relay != nil {
			return "through the relay " + f.Relay.String()
		}
		return "through a relay"
	}
	return "directly"
}

// Offline words an owner who did not answer: "bob@kez.lat is offline",
// or that they did not come online within the wait.
func Offline(o *files.OfflineError) string {
	if o.Waited > 0 {
		return fmt.Sprintf("%s did not come online within %s", o.Owner, o.Waited.Round(time.Second))
	}
	return o.Owner + " is offline"
}

// Unreachable words a fetch that found no path to the owner's device:
// who, which addresses failed, and why that may be; the caller adds how
// to try again.
func Unreachable(u *files.UnreachableError) string {
	who := u.Owner + "'s device"
	if u.Device != "" {
		who = fmt.Sprintf("%s %q", who, u.Device)
	}
	tried := fmt.Sprintf("none of the %d addresses it gave", u.Addrs)
	if u.Addrs == 1 {
		tried = "the one address it gave"
	}
	switch {
	case u.Relays == 0:
		return fmt.Sprintf("%s is online but cannot be reached: %s answered, and it uses no relay; its network blocks incoming connections, so ask them to use a relay (kez serve --relay ADDR, or one their chat-server offers)", who, tried)
	case u.Relays == 1:
		return fmt.Sprintf("%s is online but cannot be reached: %s answered, even through its relay; the relay may be down or full, so try again later", who, tried)
	}
	return fmt.Sprintf("%s is online but cannot be reached: %s answered, even through its %d relays; they may be down or full, so try again later", who, tried, u.Relays)
}

// NotShared words a name (or CID) the owner does not share with the
// viewer; Owner "" is the user's own shares.
func NotShared(n *files.NotSharedError) string {
	if n.Owner == "" {
		return fmt.Sprintf("you share no file named %q (nor with that CID)", n.What)
	}
	return fmt.Sprintf("%s shares no file named %q (nor with that CID) that you may see", n.Owner, n.What)
}

// Changed words a shared file that changed on disk, or is gone, since it
// was shared: it is not sent until it is shared again.
func Changed(c *files.ChangedError) string {
	if c.Gone {
		return fmt.Sprintf("%q is gone from %s, so it is not sent", c.Name, c.Path)
	}
	return fmt.Sprintf("%q changed on disk since you shared it, so it is not sent", c.Name)
}

// NotFound words an owner whose device no longer has the file asked for
// (files.ErrNotFound); who "" is "the owner".
func NotFound(who string) string {
	return fmt.Sprintf("%s no longer has that file (it may have been unshared)", orOwner(who))
}

func orOwner(who string) string {
	if who == "" {
		return "the owner"
	}
	return who
}

// Forbidden words a private file shared with others, not with the viewer
// (files.ErrForbidden); who "" is "the owner".
func Forbidden(who string) string {
	return fmt.Sprintf("%s shares that file privately with others, not with you, so it was not sent", orOwner(who))
}

// Busy words an owner whose device turned the fetch away for now
// (files.ErrBusy).
func Busy(who string) string {
	return fmt.Sprintf("%s is busy with other transfers", orOwner(who))
}

// Corrupt words a fetch stopped because the owner sent data that does not
// match the file's CID (files.ErrCorrupt).
func Corrupt(who string) string {
	return fmt.Sprintf("%s sent data that does not match the file's CID, so the fetch stopped and nothing unverified was kept", orOwner(who))
}
