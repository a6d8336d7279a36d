package callout

import (
	"fmt"
	"time"
)

// Defaults of [LoginLimits].
const (
	DefaultMaxQueued     = 4096
	DefaultKnownBurst    = 20
	DefaultKnownEvery    = 10 * time.Second
	DefaultMaxKnown      = 16384
	DefaultBackoffAfter  = 10
	DefaultBackoffBase   = 100 * time.Millisecond
	DefaultBackoffMax    = time.Second
	DefaultBackoffWindow = time.Minute
	DefaultMaxHeld       = 4096
	DefaultMaxAddresses  = 16384
	DefaultSummaryEvery  = time.Minute
)

// LoginLimits shape how a [Service] holds up under a flood of logins. The
// zero value gives the defaults. [Service.Stats] counts what each limit
// did.
//
// Requests wait for a worker in three lanes, served strictly in order:
//
//   - known: the key has logged in from this address before (one login in
//     KnownEvery, after a burst of KnownBurst);
//   - new: any other request from an address without recent failures;
//   - suspect: requests from an address that failed BackoffAfter times or
//     more within BackoffWindow.
//
// A registered user who logs in from where they logged in before
// therefore never waits behind a flood of bogus logins, and a flood from a
// few addresses waits behind everyone else. A request that is still queued
// when nats-server stops waiting for it (the request's expiry) is dropped
// unread; nats-server refuses that login.
//
// Repeated failures from one address back off: the first BackoffAfter
// denials within BackoffWindow are answered at once; each further one is
// held for BackoffBase, then twice as long, and so on. A denial whose delay
// would exceed BackoffMax, or that finds MaxHeld denials already held, is
// not answered at all: nats-server refuses the login at its own auth
// timeout (2 s by default). Either way a client that waits for its answer
// before trying again is slowed down, and only denials are ever delayed.
//
// Addresses are IPv4 addresses and IPv6 /64 prefixes, as nats-server saw
// the client: behind a TCP proxy every client shares the proxy's address.
type LoginLimits struct {
	// MaxQueued bounds each lane; default [DefaultMaxQueued]. A request
	// that finds its lane full is dropped unread.
	MaxQueued int
	// KnownBurst and KnownEvery are the budget of the known lane per key
	// and address: KnownBurst logins at once, then one every KnownEvery;
	// past it the key's logins take the new lane. Defaults
	// [DefaultKnownBurst] and [DefaultKnownEvery].
	KnownBurst int
	KnownEvery time.Duration
	// MaxKnown bounds the key and address pairs remembered for the known
	// lane (the least recently used are forgotten); default
	// [DefaultMaxKnown].
	MaxKnown int

	// BackoffAfter is how many failures one address may have within
	// BackoffWindow before its denials are delayed and its requests take
	// the suspect lane; default [DefaultBackoffAfter].
	BackoffAfter int
	// BackoffBase is the first delay; default [DefaultBackoffBase].
	BackoffBase time.Duration
	// BackoffMax is the longest a denial is held; default
	// [DefaultBackoffMax]. Keep it below the server's auth timeout.
	// Negative turns address tracking off: no delays, no suspect lane.
	BackoffMax time.Duration
	// BackoffWindow is how long an address's failures are remembered
	// after its last one; default [DefaultBackoffWindow].
	BackoffWindow time.Duration
	// MaxHeld bounds the denials held at once; default [DefaultMaxHeld].
	MaxHeld int
	// MaxAddresses bounds the addresses tracked (the least recently
	// failing are forgotten); default [DefaultMaxAddresses].
	MaxAddresses int

	// SummaryEvery is how often the denials of the period are summed up
	// in one INFO line; each denial itself is logged at DEBUG. Default
	// [DefaultSummaryEvery].
	SummaryEvery time.Duration
}

// withDefaults fills in the defaults and checks the values.
func (l LoginLimits) withDefaults() (LoginLimits, error) {
	setInt := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	setDur := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	setInt(&l.MaxQueued, DefaultMaxQueued)
	setInt(&l.KnownBurst, DefaultKnownBurst)
	setDur(&l.KnownEvery, DefaultKnownEvery)
	setInt(&l.MaxKnown, DefaultMaxKnown)
	setInt(&l.BackoffAfter, DefaultBackoffAfter)
	setDur(&l.BackoffBase, DefaultBackoffBase)
	setDur(&l.BackoffMax, DefaultBackoffMax)
	setDur(&l.BackoffWindow, DefaultBackoffWindow)
	setInt(&l.MaxHeld, DefaultMaxHeld)
	setInt(&l.MaxAddresses, DefaultMaxAddresses)
	setDur(&l.SummaryEvery, DefaultSummaryEvery)
	for name, v := range map[string]int{
		"MaxQueued": l.MaxQueued, "KnownBurst": l.KnownBurst, "MaxKnown": l.MaxKnown,
		"BackoffAfter": l.BackoffAfter, "MaxHeld": l.MaxHeld, "MaxAddresses": l.MaxAddresses,
	} {
		if v < 0 {
			return l, fmt.Errorf("callout: LoginLimits.%s is %d; want 0 (the default) or more", name, v)
		}
	}
	for name, v := range map[string]time.Duration{
		"KnownEvery": l.KnownEvery, "BackoffBase": l.BackoffBase,
		"BackoffWindow": l.BackoffWindow, "SummaryEvery": l.SummaryEvery,
	} {
		if v < 0 {
			return l, fmt.Errorf("callout: LoginLimits.%s is %s; want 0 (the default) or more", name, v)
		}
	}
	if l.BackoffMax > 0 && l.BackoffBase > l.BackoffMax {
		return l, fmt.Errorf("callout: LoginLimits.BackoffBase %s is longer than BackoffMax %s", l.BackoffBase, l.BackoffMax)
	}
	return l, nil
}

// tracking reports whether addresses are tracked at all.
func (l LoginLimits) tracking() bool { return l.BackoffMax > 0 }

// delay returns how long to hold the denial of an address's n-th failure
// within the window: 0 for the first BackoffAfter, then BackoffBase,
// doubling. ok is false when the delay would exceed BackoffMax.
func (l LoginLimits) delay(n int) (d time.Duration, ok bool) {
	if !l.tracking() || n <= l.BackoffAfter {
		return 0, true
	}
	d = l.BackoffBase
	for i := l.BackoffAfter + 1; i < n; i++ {
		d *= 2
		if d > l.BackoffMax {
			return 0, false
		}
	}
	return d, d <= l.BackoffMax
}
