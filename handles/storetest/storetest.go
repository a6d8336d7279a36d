// Package storetest is the contract every [handles.Store] keeps, as tests
// that any implementation runs against itself:
//
//	func TestContract(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) (handles.Store, func() handles.Store) {
//			path := filepath.Join(t.TempDir(), "handles.db")
//			open := func() handles.Store { s, _ := handles.OpenSQLite(path); ...; return s }
//			return open(), open
//		})
//	}
//
// The SQLite registry (package handles) and the JetStream registry
// (package handles/jsstore) both run it. Use it only from tests.
package storetest

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/internal/sqlitedb"
	"github.com/kez-lat/kez-chat/kez"
)

// Open makes a fresh, empty store for one test. It returns the store and
// a function that opens another handle on the same data, as a second
// process (another chat-server replica) would; the concurrency tests race
// through both. Open registers the cleanup of everything it opens.
type Open func(t *testing.T) (s handles.Store, another func() handles.Store)

// Run runs the whole contract as subtests of t.
func Run(t *testing.T, open Open) {
	t.Run("ClaimAndLookup", func(t *testing.T) { testClaimAndLookup(t, open) })
	t.Run("LookAlikes", func(t *testing.T) { testLookAlikes(t, open) })
	t.Run("ConfusableLookAlikes", func(t *testing.T) { testConfusables(t, open) })
	t.Run("Suspend", func(t *testing.T) { testSuspend(t, open) })
	t.Run("Release", func(t *testing.T) { testRelease(t, open) })
	t.Run("BadInput", func(t *testing.T) { testBadInput(t, open) })
	t.Run("ConcurrentClaimsOneName", func(t *testing.T) { testConcurrentOneName(t, open) })
	t.Run("ConcurrentClaimsLookAlikes", func(t *testing.T) { testConcurrentLookAlikes(t, open) })
	t.Run("ConcurrentClaimsOneKey", func(t *testing.T) { testConcurrentOneKey(t, open) })
	t.Run("ConcurrentReplays", func(t *testing.T) { testConcurrentReplays(t, open) })
	t.Run("Devices", func(t *testing.T) { testDevices(t, open) })
	t.Run("DeviceLimit", func(t *testing.T) { testDeviceLimit(t, open) })
	t.Run("ConcurrentDevices", func(t *testing.T) { testConcurrentDevices(t, open) })
}

// Key returns a fixed public key for i: the same i gives the same key.
func Key(i int) kez.PublicKey {
	seed := sha256.Sum256(fmt.Appendf(nil, "handles/storetest key %d", i))
	k, err := kez.PublicKeyFromEd25519(ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey))
	if err != nil {
		panic(err)
	}
	return k
}

// Rec is a claim record of name@kez.lat for key at a fixed time.
func Rec(name string, key kez.PublicKey) handles.Record {
	return handles.Record{
		Handle:        handles.Handle{Name: name, Domain: "kez.lat"},
		Key:           key,
		EncryptionKey: []byte{1, 2, 3},
		UpdatedAt:     time.UnixMilli(1_800_000_000_123),
	}
}

func h(name string) handles.Handle { return handles.Handle{Name: name, Domain: "kez.lat"} }

func claim(t *testing.T, s handles.Store, r handles.Record, wantCreated bool) {
	t.Helper()
	created, err := s.Claim(context.Background(), r)
	if err != nil || created != wantCreated {
		t.Fatalf("claim %s by %.8s: created %v, %v; want created %v", r.Handle, r.Key.String(), created, err, wantCreated)
	}
}

func testClaimAndLookup(t *testing.T, open Open) {
	ctx := context.Background()
	s, _ := open(t)
	alice, bob := Key(1), Key(2)

	claim(t, s, Rec("alice", alice), true)
	// Replay by the same key: harmless, refreshes the encryption key.
	r2 := Rec("alice", alice)
	r2.EncryptionKey, r2.Generation, r2.UpdatedAt = []byte{9}, 1, r2.UpdatedAt.Add(time.Hour)
	claim(t, s, r2, false)
	got, err := s.Lookup(ctx, h("alice"))
	if err != nil {
		t.Fatal(err)
	}
	want := handles.Record{
		Handle: h("alice"), Key: alice, EncryptionKey: []byte{9}, Generation: 1,
		ClaimedAt: Rec("", alice).UpdatedAt, UpdatedAt: r2.UpdatedAt,
	}
	if !same(got, want) {
		t.Fatalf("lookup:\n got %+v\nwant %+v", got, want)
	}
	if got, err := s.LookupKey(ctx, alice); err != nil || !same(got, want) {
		t.Fatalf("LookupKey: %+v %v", got, err)
	}

	for _, tc := range []struct {
		r    handles.Record
		want error
	}{
		{Rec("alice", bob), handles.ErrTaken},
		{Rec("al.ice", bob), handles.ErrTaken}, // same skeleton
		{Rec("a-l_ice", bob), handles.ErrTaken},
		{Rec("alicia", alice), handles.ErrKeyHasHandle},
		{Rec("al.ice", alice), handles.ErrKeyHasHandle},
	} {
		if _, err := s.Claim(ctx, tc.r); !errors.Is(err, tc.want) {
			t.Errorf("claim %s by %.8s: %v, want %v", tc.r.Handle, tc.r.Key.String(), err, tc.want)
		}
	}
	// Refused claims changed nothing.
	if got, err := s.Lookup(ctx, h("alice")); err != nil || !same(got, want) {
		t.Fatalf("after refused claims: %+v %v", got, err)
	}
	for _, name := range []string{"alicia", "al.ice"} {
		if _, err := s.Lookup(ctx, h(name)); !errors.Is(err, handles.ErrNotFound) {
			t.Errorf("lookup %s: %v, want ErrNotFound", name, err)
		}
	}

	// The same name at another domain is another name.
	other := Rec("alice", bob)
	other.Handle.Domain = "other.example"
	claim(t, s, other, true)
	if r, err := s.LookupKey(ctx, bob); err != nil || r.Handle != other.Handle || r.Key != bob {
		t.Fatalf("LookupKey bob: %+v %v", r, err)
	}
	if r, err := s.Lookup(ctx, h("alice")); err != nil || r.Key != alice {
		t.Fatalf("alice at kez.lat after the other domain's claim: %+v %v", r, err)
	}
	// A development domain with a port.
	dev := Rec("carol", Key(3))
	dev.Handle.Domain = "127.0.0.1:8080"
	claim(t, s, dev, true)
	if r, err := s.Lookup(ctx, dev.Handle); err != nil || r.Key != Key(3) {
		t.Fatalf("lookup at a development domain: %+v %v", r, err)
	}

	if _, err := s.LookupKey(ctx, Key(99)); !errors.Is(err, handles.ErrNotFound) {
		t.Fatalf("LookupKey unknown: %v", err)
	}
	if _, err := s.Lookup(ctx, h("nobody1")); !errors.Is(err, handles.ErrNotFound) {
		t.Fatalf("Lookup unknown: %v", err)
	}
	if _, err := s.Lookup(ctx, handles.Handle{Name: "alice", Domain: "third.example"}); !errors.Is(err, handles.ErrNotFound) {
		t.Fatalf("Lookup at an unknown domain: %v", err)
	}
}

// same compares records, times to the millisecond (what stores keep).
func same(a, b handles.Record) bool {
	return a.Handle == b.Handle && a.Key == b.Key && string(a.EncryptionKey) == string(b.EncryptionKey) &&
		a.Generation == b.Generation && a.Suspended == b.Suspended &&
		a.ClaimedAt.UnixMilli() == b.ClaimedAt.UnixMilli() && a.UpdatedAt.UnixMilli() == b.UpdatedAt.UnixMilli()
}

func testLookAlikes(t *testing.T, open Open) {
	ctx := context.Background()
	s, _ := open(t)
	claim(t, s, Rec("bo.b", Key(1)), true)
	for _, name := range []string{"bob", "b-ob", "b_o.b", "bo-b"} {
		if _, err := s.Claim(ctx, Rec(name, Key(2))); !errors.Is(err, handles.ErrTaken) {
			t.Errorf("claim %s by another key: %v, want ErrTaken", name, err)
		}
		if _, err := s.Claim(ctx, Rec(name, Key(1))); !errors.Is(err, handles.ErrKeyHasHandle) {
			t.Errorf("claim %s by the holder: %v, want ErrKeyHasHandle", name, err)
		}
		if _, err := s.Lookup(ctx, h(name)); !errors.Is(err, handles.ErrNotFound) {
			t.Errorf("lookup %s: %v, want ErrNotFound", name, err)
		}
	}
	// Names with other skeletons are free.
	claim(t, s, Rec("bobb", Key(2)), true)
	claim(t, s, Rec("b.o.b.b.y", Key(3)), true)
}

// ConfusablePairs are names and look-alikes of them under the skeleton
// rule (docs/spec/handles.md, "Skeletons"), one or more for each fold.
var ConfusablePairs = []struct{ Name, LookAlike string }{
	{"bob", "b0b"},           // 0 → o
	{"bob", "8o8"},           // 8 → b
	{"alice", "a1ice"},       // 1 → l, i → l
	{"alice", "al1ce"},       // 1 → l, i → l
	{"neil", "nell"},         // i → l
	{"mallory", "rnallory"},  // rn → m
	{"walter", "vvalter"},    // vv → w
	{"dave", "clave"},        // cl → d
	{"sam", "5am"},           // 5 → s
	{"dave", "c1ave"},        // 1 → l, then cl → d
	{"mallory", "r.nallory"}, // separators, then rn → m
}

// testConfusables: with a name taken, each look-alike is refused with a
// *handles.TakenError naming it, and the other way round.
func testConfusables(t *testing.T, open Open) {
	ctx := context.Background()
	for i, p := range ConfusablePairs {
		for _, order := range [][2]string{{p.Name, p.LookAlike}, {p.LookAlike, p.Name}} {
			s, _ := open(t)
			first, second := order[0], order[1]
			// Positive control: each name alone is free.
			claim(t, s, Rec(second, Key(100+i)), true)
			if err := s.Release(ctx, h(second)); err != nil {
				t.Fatal(err)
			}
			claim(t, s, Rec(first, Key(1)), true)
			_, err := s.Claim(ctx, Rec(second, Key(2)))
			var te *handles.TakenError
			if !errors.As(err, &te) || !errors.Is(err, handles.ErrTaken) || te.Holder != h(first) || te.Claimed != h(second) || !te.LookAlike() {
				t.Errorf("with %s taken, claim %s: %v; want a *TakenError naming %s", first, second, err, first)
			}
			if _, err := s.Claim(ctx, Rec(second, Key(1))); !errors.Is(err, handles.ErrKeyHasHandle) {
				t.Errorf("with %s taken, its holder claims %s: %v; want ErrKeyHasHandle", first, second, err)
			}
			if _, err := s.Lookup(ctx, h(second)); !errors.Is(err, handles.ErrNotFound) {
				t.Errorf("with %s taken, lookup %s: %v; want ErrNotFound", first, second, err)
			}
			if r, err := s.Lookup(ctx, h(first)); err != nil || r.Key != Key(1) {
				t.Errorf("lookup %s after the refused look-alike: %+v %v", first, r, err)
			}
		}
	}
	// The exact name: a *TakenError that is not a look-alike.
	s, _ := open(t)
	claim(t, s, Rec("bob", Key(1)), true)
	_, err := s.Claim(ctx, Rec("bob", Key(2)))
	var te *handles.TakenError
	if !errors.As(err, &te) || te.Holder != h("bob") || te.LookAlike() {
		t.Errorf("claim of a taken name: %v; want a *TakenError for bob itself", err)
	}
}

func testSuspend(t *testing.T, open Open) {
	ctx := context.Background()
	s, _ := open(t)
	alice := Key(1)
	claim(t, s, Rec("alice", alice), true)
	if err := s.SetSuspended(ctx, h("alice"), true); err != nil {
		t.Fatal(err)
	}
	if r, err := s.LookupKey(ctx, alice); err != nil || !r.Suspended {
		t.Fatalf("LookupKey while suspended: %+v %v", r, err)
	}
	if r, err := s.Lookup(ctx, h("alice")); err != nil || !r.Suspended {
		t.Fatalf("Lookup while suspended: %+v %v", r, err)
	}
	if _, err := s.Claim(ctx, Rec("alice", alice)); !errors.Is(err, handles.ErrSuspended) {
		t.Fatalf("claim while suspended: %v", err)
	}
	if _, err := s.Claim(ctx, Rec("alice", Key(2))); !errors.Is(err, handles.ErrTaken) {
		t.Fatalf("another key's claim of a suspended name: %v", err)
	}
	for _, name := range []string{"zed", "al.ice"} {
		if err := s.SetSuspended(ctx, h(name), true); !errors.Is(err, handles.ErrNotFound) {
			t.Fatalf("suspend %s: %v, want ErrNotFound", name, err)
		}
	}
	if err := s.SetSuspended(ctx, h("alice"), false); err != nil {
		t.Fatal(err)
	}
	if r, err := s.LookupKey(ctx, alice); err != nil || r.Suspended {
		t.Fatalf("LookupKey after reinstating: %+v %v", r, err)
	}
	claim(t, s, Rec("alice", alice), false)
}

func testRelease(t *testing.T, open Open) {
	ctx := context.Background()
	s, _ := open(t)
	alice, bob := Key(1), Key(2)
	claim(t, s, Rec("alice", alice), true)
	claim(t, s, Rec("bob", bob), true)
	if err := s.Release(ctx, h("al.ice")); !errors.Is(err, handles.ErrNotFound) {
		t.Fatalf("release of a look-alike: %v", err)
	}
	if err := s.Release(ctx, h("alice")); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, h("alice")); !errors.Is(err, handles.ErrNotFound) {
		t.Fatalf("second release: %v", err)
	}
	if _, err := s.Lookup(ctx, h("alice")); !errors.Is(err, handles.ErrNotFound) {
		t.Fatalf("lookup after release: %v", err)
	}
	if _, err := s.LookupKey(ctx, alice); !errors.Is(err, handles.ErrNotFound) {
		t.Fatalf("LookupKey after release: %v", err)
	}
	if r, err := s.LookupKey(ctx, bob); err != nil || r.Handle != h("bob") {
		t.Fatalf("release of alice touched bob: %+v %v", r, err)
	}
	// The key and the name are free again: the key takes a look-alike,
	// and after a second release another key takes the name.
	claim(t, s, Rec("al.ice", alice), true)
	if r, err := s.LookupKey(ctx, alice); err != nil || r.Handle != h("al.ice") {
		t.Fatalf("LookupKey after reclaiming: %+v %v", r, err)
	}
	if err := s.Release(ctx, h("al.ice")); err != nil {
		t.Fatal(err)
	}
	claim(t, s, Rec("alice", Key(3)), true)
	if r, err := s.Lookup(ctx, h("alice")); err != nil || r.Key != Key(3) {
		t.Fatalf("lookup after another key took the name: %+v %v", r, err)
	}
	if _, err := s.LookupKey(ctx, alice); !errors.Is(err, handles.ErrNotFound) {
		t.Fatalf("the old key still finds a handle: %v", err)
	}
}

func testBadInput(t *testing.T, open Open) {
	ctx := context.Background()
	s, _ := open(t)
	for _, r := range []handles.Record{
		{Key: Key(1)},
		{Handle: h("alice")},
	} {
		created, err := s.Claim(ctx, r)
		if err == nil || created || errors.Is(err, handles.ErrTaken) {
			t.Errorf("claim %+v: created %v, %v; want a plain error", r, created, err)
		}
	}
	if _, err := s.Lookup(ctx, handles.Handle{}); !errors.Is(err, handles.ErrNotFound) {
		t.Errorf("lookup of the zero handle: %v", err)
	}
	if _, err := s.LookupKey(ctx, kez.PublicKey{}); !errors.Is(err, handles.ErrNotFound) {
		t.Errorf("LookupKey of the zero key: %v", err)
	}
}

// race runs f(i) for i in [0, n) at once, through s and another handle
// on the same data in turn.
func race(t *testing.T, open Open, n int, f func(s handles.Store, i int) error) (handles.Store, []error) {
	s, another := open(t)
	s2 := another()
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		store := s
		if i%2 == 1 {
			store = s2
		}
		wg.Go(func() {
			<-start
			errs[i] = f(store, i)
		})
	}
	close(start)
	wg.Wait()
	return s, errs
}

func testConcurrentOneName(t *testing.T, open Open) {
	const n = 16
	created := make([]bool, n)
	s, errs := race(t, open, n, func(s handles.Store, i int) (err error) {
		created[i], err = s.Claim(context.Background(), Rec("popular", Key(i)))
		return err
	})
	winner := oneWinner(t, errs, created, handles.ErrTaken)
	if r, err := s.Lookup(context.Background(), h("popular")); err != nil || r.Key != Key(winner) {
		t.Fatalf("lookup: %+v %v; want the winner %d", r, err, winner)
	}
}

func testConcurrentLookAlikes(t *testing.T, open Open) {
	names := []string{"popular", "pop.ular", "p-opular", "po_pular", "popu.lar", "p.o.p.u.l.a.r", "pop-ular", "popul_ar"}
	n := len(names)
	created := make([]bool, n)
	s, errs := race(t, open, n, func(s handles.Store, i int) (err error) {
		created[i], err = s.Claim(context.Background(), Rec(names[i], Key(i)))
		return err
	})
	winner := oneWinner(t, errs, created, handles.ErrTaken)
	for i, name := range names {
		r, err := s.Lookup(context.Background(), h(name))
		switch {
		case i == winner && (err != nil || r.Key != Key(i)):
			t.Errorf("lookup of the winner %s: %+v %v", name, r, err)
		case i != winner && !errors.Is(err, handles.ErrNotFound):
			t.Errorf("lookup of the loser %s: %+v %v", name, r, err)
		}
	}
}

func testConcurrentOneKey(t *testing.T, open Open) {
	const n = 8
	key := Key(1)
	created := make([]bool, n)
	s, errs := race(t, open, n, func(s handles.Store, i int) (err error) {
		created[i], err = s.Claim(context.Background(), Rec(fmt.Sprintf("name%d", i), key))
		return err
	})
	winner := oneWinner(t, errs, created, handles.ErrKeyHasHandle)
	ctx := context.Background()
	if r, err := s.LookupKey(ctx, key); err != nil || r.Handle != h(fmt.Sprintf("name%d", winner)) {
		t.Fatalf("LookupKey: %+v %v; want name%d", r, err, winner)
	}
	// The losers' names stayed free.
	for i := range n {
		if i == winner {
			continue
		}
		name := fmt.Sprintf("name%d", i)
		if _, err := s.Lookup(ctx, h(name)); !errors.Is(err, handles.ErrNotFound) {
			t.Errorf("lookup of the loser %s: %v", name, err)
		}
		claim(t, s, Rec(name, Key(100+i)), true)
	}
}

func testConcurrentReplays(t *testing.T, open Open) {
	const n = 8
	key := Key(1)
	claimed := make([]bool, n)
	s, errs := race(t, open, n, func(s handles.Store, i int) (err error) {
		claimed[i], err = s.Claim(context.Background(), Rec("alice", key))
		return err
	})
	any := false
	for i, err := range errs {
		if err != nil {
			t.Errorf("replay %d: %v", i, err)
		}
		any = any || claimed[i]
	}
	if !any {
		t.Error("no replay reported the entry as created")
	}
	if r, err := s.LookupKey(context.Background(), key); err != nil || r.Handle != h("alice") {
		t.Fatalf("LookupKey: %+v %v", r, err)
	}
}

// oneWinner checks that exactly one call succeeded with created=true and
// all others failed with loss; it returns the winner's index.
func oneWinner(t *testing.T, errs []error, created []bool, loss error) int {
	t.Helper()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && created[i] && winner < 0:
			winner = i
		case err == nil:
			t.Errorf("call %d also won (created %v)", i, created[i])
		case !errors.Is(err, loss):
			t.Errorf("call %d: %v, want %v", i, err, loss)
		}
	}
	if winner < 0 {
		t.Fatal("no call won")
	}
	return winner
}

// Legacy returns the entries of a registry written under skeleton rule 1
// (separators only), as a store of an older version wrote them: bob,
// alice and c.lara, and two pairs that rule 1 let in but the current
// rule folds together, mallory and rnallory, walter and vvalter. The
// entry of rec i is held by Key(i+1); ClaimedAt goes up with i.
func Legacy() []handles.Record {
	var out []handles.Record
	for i, name := range []string{"bob", "alice", "mallory", "rnallory", "walter", "vvalter", "c.lara"} {
		r := Rec(name, Key(i+1))
		r.UpdatedAt = r.UpdatedAt.Add(time.Duration(i) * time.Second)
		r.ClaimedAt = r.UpdatedAt
		out = append(out, r)
	}
	return out
}

// RunUpgraded checks a store opened (by the current version) on a
// registry that holds [Legacy]: every old entry keeps working, the pairs
// that now share a skeleton both stay valid, and every new look-alike
// claim is refused with a *handles.TakenError naming the handle held.
func RunUpgraded(t *testing.T, s handles.Store) {
	ctx := context.Background()
	legacy := Legacy()
	for i, r := range legacy {
		got, err := s.Lookup(ctx, r.Handle)
		if err != nil || got.Key != r.Key {
			t.Fatalf("lookup %s after the upgrade: %+v %v", r.Handle, got, err)
		}
		if got, err := s.LookupKey(ctx, r.Key); err != nil || got.Handle != r.Handle {
			t.Fatalf("LookupKey of %s's key after the upgrade: %+v %v", r.Handle, got, err)
		}
		// Renewal by the holder, twins included.
		if created, err := s.Claim(ctx, Rec(r.Handle.Name, Key(i+1))); err != nil || created {
			t.Fatalf("renewal of %s: created %v, %v", r.Handle, created, err)
		}
	}
	refused := func(name, holder string) {
		t.Helper()
		_, err := s.Claim(ctx, Rec(name, Key(50)))
		var te *handles.TakenError
		if !errors.As(err, &te) || te.Holder != h(holder) {
			t.Errorf("claim %s after the upgrade: %v; want a *TakenError naming %s", name, err, holder)
		}
	}
	for _, c := range [][2]string{
		{"b0b", "bob"}, {"8o8", "bob"}, {"a1ice", "alice"}, {"al1ce", "alice"},
		{"mallory", "mallory"}, {"rnallory", "rnallory"}, {"rnal1ory", "mallory"}, {"ma11ory", "mallory"},
		{"walter", "walter"}, {"vvalter", "vvalter"}, {"vva1ter", "walter"},
		{"clara", "c.lara"}, {"dara", "c.lara"}, {"c1ara", "c.lara"},
	} {
		refused(c[0], c[1])
	}
	// Positive control: a name no one's skeleton has is free.
	claim(t, s, Rec("carol", Key(51)), true)

	// The twins stay independent: suspend one, release the other.
	if err := s.SetSuspended(ctx, h("rnallory"), true); err != nil {
		t.Fatal(err)
	}
	if r, err := s.LookupKey(ctx, Key(4)); err != nil || !r.Suspended {
		t.Fatalf("rnallory after suspending it: %+v %v", r, err)
	}
	if r, err := s.Lookup(ctx, h("mallory")); err != nil || r.Suspended {
		t.Fatalf("mallory after suspending its twin: %+v %v", r, err)
	}
	if err := s.SetSuspended(ctx, h("rnallory"), false); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, h("mallory")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lookup(ctx, h("mallory")); !errors.Is(err, handles.ErrNotFound) {
		t.Fatalf("mallory after its release: %v", err)
	}
	if r, err := s.LookupKey(ctx, Key(4)); err != nil || r.Handle != h("rnallory") {
		t.Fatalf("rnallory after its twin's release: %+v %v", r, err)
	}
	// While rnallory lives, mallory and its look-alikes stay taken.
	refused("mallory", "rnallory")
	refused("rnal1ory", "rnallory")
	if err := s.Release(ctx, h("rnallory")); err != nil {
		t.Fatal(err)
	}
	claim(t, s, Rec("rnal1ory", Key(52)), true)
	refused("mallory", "rnal1ory")
}

// schemaV1 is the registry schema the previous version shipped, with its
// unique index on the skeleton of rule 1 (the name without . - _). It is
// a copy on purpose: it is what old files hold, whatever the package's
// migrations become.
const schemaV1 = `
CREATE TABLE IF NOT EXISTS handles (
	domain         TEXT    NOT NULL,
	name           TEXT    NOT NULL,
	skeleton       TEXT    NOT NULL,
	key            TEXT    NOT NULL,
	enc_key        BLOB,
	enc_generation INTEGER NOT NULL DEFAULT 0,
	claimed_at     INTEGER NOT NULL,
	updated_at     INTEGER NOT NULL,
	suspended      INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (domain, name)
) STRICT;
CREATE UNIQUE INDEX IF NOT EXISTS handles_skeleton ON handles (domain, skeleton);
CREATE UNIQUE INDEX IF NOT EXISTS handles_key ON handles (key);
`

// WriteRule1SQLite writes recs into a SQLite registry file of schema 1,
// as the Claim of a version before skeleton rule 2 did (the skeleton was
// the name without . - _, and unique), creating the file if needed. A
// record that rule refused fails the test.
func WriteRule1SQLite(t testing.TB, path string, recs []handles.Record) {
	t.Helper()
	db, err := sqlitedb.Open(path, sqlitedb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := sqlitedb.Migrate(db, []string{schemaV1}); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		_, err := db.Exec(`INSERT INTO handles (domain, name, skeleton, key, enc_key, enc_generation, claimed_at, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			r.Handle.Domain, r.Handle.Name, strings.NewReplacer(".", "", "-", "", "_", "").Replace(r.Handle.Name),
			r.Key.String(), r.EncryptionKey, r.Generation, r.ClaimedAt.UnixMilli(), r.UpdatedAt.UnixMilli())
		if err != nil {
			t.Fatalf("the previous version refused %s: %v", r.Handle, err)
		}
	}
}
