package callout

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/kez"
)

func testLimits(t testing.TB, l LoginLimits) LoginLimits {
	t.Helper()
	l, err := l.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestAddrOf(t *testing.T) {
	for host, want := range map[string]string{
		"127.0.0.1":                 "127.0.0.1",
		"::ffff:10.1.2.3":           "10.1.2.3",
		"2001:db8:1:2:3:4:5:6":      "2001:db8:1:2::",
		"2001:db8:1:2:ffff::1":      "2001:db8:1:2::", // same /64
		"fe80::1%eth0":              "fe80::",
		"2001:db8:1:3::1":           "2001:db8:1:3::",
		"":                          "invalid IP",
		"not an address":            "invalid IP",
		"127.0.0.1:4222":            "invalid IP",
		"2001:db8::1/64":            "invalid IP",
		"2001:0db8:0000:0002::0001": "2001:db8:0:2::",
	} {
		if got := addrOf(host).String(); got != want {
			t.Errorf("addrOf(%q) = %s, want %s", host, got, want)
		}
	}
}

func TestBackoffDelays(t *testing.T) {
	l := testLimits(t, LoginLimits{BackoffAfter: 3, BackoffBase: 100 * time.Millisecond, BackoffMax: time.Second})
	want := []struct {
		d  time.Duration
		ok bool
	}{
		{0, true}, {0, true}, {0, true}, // the first BackoffAfter
		{100 * time.Millisecond, true}, {200 * time.Millisecond, true}, {400 * time.Millisecond, true}, {800 * time.Millisecond, true},
		{0, false}, {0, false}, // 1.6 s would exceed BackoffMax: unanswered
	}
	for i, w := range want {
		d, ok := l.delay(i + 1)
		if d != w.d || ok != w.ok {
			t.Errorf("failure %d: delay %s, answered %v; want %s, %v", i+1, d, ok, w.d, w.ok)
		}
	}
	if d, ok := l.delay(1 << 20); ok || d != 0 {
		t.Errorf("a millionth failure: %s %v", d, ok)
	}
	off := testLimits(t, LoginLimits{BackoffMax: -1})
	for n := range 100 {
		if d, ok := off.delay(n); d != 0 || !ok {
			t.Fatalf("backoff off, failure %d: %s %v", n, d, ok)
		}
	}
}

func TestLimitsRejectNegatives(t *testing.T) {
	for _, l := range []LoginLimits{
		{MaxQueued: -1}, {KnownBurst: -1}, {MaxKnown: -1}, {BackoffAfter: -1}, {MaxHeld: -1}, {MaxAddresses: -1},
		{KnownEvery: -1}, {BackoffBase: -1}, {BackoffWindow: -1}, {SummaryEvery: -1},
		{BackoffBase: 2 * time.Second, BackoffMax: time.Second},
	} {
		if _, err := l.withDefaults(); err == nil {
			t.Errorf("%+v accepted", l)
		}
	}
}

// TestTrackerWindowAndThreshold: an address becomes suspect at its
// BackoffAfter-th failure within the window and is forgiven after a quiet
// window; other addresses are not affected.
func TestTrackerWindowAndThreshold(t *testing.T) {
	tr := newTracker(testLimits(t, LoginLimits{BackoffAfter: 3, BackoffWindow: time.Minute}))
	now := time.Unix(1_800_000_000, 0)
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	for i := 1; i <= 3; i++ {
		if tr.suspect(a, now) {
			t.Fatalf("suspect after %d failures", i-1)
		}
		if n := tr.fail(a, now); n != i {
			t.Fatalf("failure %d counted as %d", i, n)
		}
	}
	if !tr.suspect(a, now) || tr.suspect(b, now) {
		t.Fatal("after 3 failures: a should be suspect, b not")
	}
	now = now.Add(59 * time.Second)
	if !tr.suspect(a, now) {
		t.Fatal("forgiven within the window")
	}
	if n := tr.fail(a, now); n != 4 {
		t.Fatalf("a failure within the window counted as %d", n)
	}
	now = now.Add(61 * time.Second)
	if tr.suspect(a, now) {
		t.Fatal("still suspect after a quiet window")
	}
	if n := tr.fail(a, now); n != 1 {
		t.Fatalf("the first failure after a quiet window counted as %d", n)
	}
	// No address (never a real client): not tracked.
	for range 10 {
		if n := tr.fail(netip.Addr{}, now); n != 1 {
			t.Fatalf("a request without an address was tracked: %d", n)
		}
	}
	if tr.suspect(netip.Addr{}, now) {
		t.Fatal("the zero address became suspect")
	}
}

// TestTrackerMemoryBound: a flood from more addresses, and more key and
// address pairs, than the bounds keeps at most the bounds.
func TestTrackerMemoryBound(t *testing.T) {
	tr := newTracker(testLimits(t, LoginLimits{MaxAddresses: 100, MaxKnown: 50}))
	now := time.Unix(1_800_000_000, 0)
	a := netip.MustParseAddr("10.0.0.0")
	for range 100_000 {
		tr.fail(a, now)
		a = a.Next()
	}
	var key kez.PublicKey
	for i := range 10_000 {
		key[0], key[1] = byte(i), byte(i>>8)
		tr.granted(key, a, now)
	}
	if addrs, known := tr.sizes(); addrs != 100 || known != 50 {
		t.Fatalf("tracked %d addresses and %d pairs, want the bounds 100 and 50", addrs, known)
	}
	// The most recent ones are the ones kept.
	if !tr.takeKnown(key, a, now) {
		t.Fatal("the latest pair was forgotten")
	}
	key[0], key[1] = 0, 0
	if tr.takeKnown(key, a, now) {
		t.Fatal("the oldest pair was kept past the bound")
	}
}

// TestKnownBudget: a known pair takes the known lane for KnownBurst
// logins, then one per KnownEvery; a denial forgets the pair; another
// address with the same key is not known.
func TestKnownBudget(t *testing.T) {
	tr := newTracker(testLimits(t, LoginLimits{KnownBurst: 3, KnownEvery: 10 * time.Second}))
	now := time.Unix(1_800_000_000, 0)
	var alice kez.PublicKey
	alice[0] = 1
	home, elsewhere := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("203.0.113.9")
	if tr.takeKnown(alice, home, now) {
		t.Fatal("known before any login")
	}
	tr.granted(alice, home, now)
	for i := range 3 {
		if !tr.takeKnown(alice, home, now) {
			t.Fatalf("login %d of the burst refused the known lane", i+1)
		}
	}
	if tr.takeKnown(alice, home, now) {
		t.Fatal("a fourth login at once took the known lane")
	}
	if tr.takeKnown(alice, elsewhere, now) {
		t.Fatal("the key is known from an address it never logged in from")
	}
	now = now.Add(10 * time.Second)
	if !tr.takeKnown(alice, home, now) || tr.takeKnown(alice, home, now) {
		t.Fatal("after KnownEvery: want exactly one more")
	}
	tr.granted(alice, home, now) // a grant does not refill the budget
	if tr.takeKnown(alice, home, now) {
		t.Fatal("a grant refilled the budget")
	}
	now = now.Add(time.Hour)
	tr.denied(alice, home)
	if tr.takeKnown(alice, home, now) {
		t.Fatal("still known after a denial")
	}
}

// TestSummaryPeriod: the period's failing addresses and the one that
// failed most, then a fresh period.
func TestSummaryPeriod(t *testing.T) {
	tr := newTracker(testLimits(t, LoginLimits{}))
	now := time.Unix(1_800_000_000, 0)
	for i := range 5 {
		for range i + 1 {
			tr.fail(netip.MustParseAddr(fmt.Sprintf("192.0.2.%d", i+1)), now)
		}
	}
	addrs, top, n := tr.endPeriod()
	if addrs != 5 || top.String() != "192.0.2.5" || n != 5 {
		t.Fatalf("period: %d addresses, top %s with %d", addrs, top, n)
	}
	tr.fail(netip.MustParseAddr("192.0.2.1"), now)
	addrs, top, n = tr.endPeriod()
	if addrs != 1 || top.String() != "192.0.2.1" || n != 1 {
		t.Fatalf("next period: %d addresses, top %s with %d", addrs, top, n)
	}
	if addrs, _, n = tr.endPeriod(); addrs != 0 || n != 0 {
		t.Fatalf("an empty period: %d addresses, top count %d", addrs, n)
	}
}
