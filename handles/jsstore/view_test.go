package jsstore

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/handles/storetest"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/kez-lat/kez-chat/kez"
)

// clock is a fake clock the tests move by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.UnixMilli(1_800_000_000_000)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// viewOf opens a fresh bucket on srv and a view of it (stopped by
// t.Cleanup), synced once.
func viewOf(t *testing.T, url string, opts ...ViewOption) (*Store, *View) {
	t.Helper()
	ctx := context.Background()
	s, err := New(ctx, natstest.ConnectJetStream(t, url), WithBucket(fmt.Sprintf("V%d", buckets.Add(1))))
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.NewView(ctx, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	syncView(t, v)
	return s, v
}

func syncView(t *testing.T, v *View) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := v.Sync(ctx); err != nil {
		t.Fatal(err)
	}
}

// lookupBoth looks key up in the view and the store, checks that they
// agree, and returns the view's answer and how it was answered.
func lookupBoth(t *testing.T, s *Store, v *View, key kez.PublicKey) (handles.Record, error, string) {
	t.Helper()
	ctx := context.Background()
	before := v.Stats().Lookups
	got, err := v.LookupKey(ctx, key)
	want, werr := s.LookupKey(ctx, key)
	if fmt.Sprint(err) != fmt.Sprint(werr) || !reflect.DeepEqual(got, want) {
		t.Fatalf("the view answers %+v, %v; the store %+v, %v", got, err, want, werr)
	}
	after := v.Stats().Lookups
	for _, a := range answerNames {
		if after[a] == before[a]+1 {
			return got, err, a
		}
	}
	t.Fatalf("no answer counted: %v then %v", before, after)
	return got, err, ""
}

func TestViewFollows(t *testing.T) {
	srv := natstest.Run(t, natstest.JetStreamConf)
	s, v := viewOf(t, srv.ClientURL(), WithClock(newClock().now))
	ctx := context.Background()
	alice, phone, bob := storetest.Key(1), storetest.Key(2), storetest.Key(3)
	step := func(name string, do func() error, key kez.PublicKey, check func(handles.Record, error) bool) {
		t.Helper()
		if err := do(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		syncView(t, v)
		rec, err, answer := lookupBoth(t, s, v, key)
		if answer != AnswerView || !check(rec, err) {
			t.Fatalf("%s: answered by %s: %+v, %v", name, answer, rec, err)
		}
	}
	step("claim", func() error { _, err := s.Claim(ctx, storetest.Rec("alice", alice)); return err }, alice,
		func(r handles.Record, err error) bool { return err == nil && r.Handle.Name == "alice" && !r.Suspended })
	step("suspend", func() error { return s.SetSuspended(ctx, handles.Handle{Name: "alice", Domain: "kez.lat"}, true) }, alice,
		func(r handles.Record, err error) bool { return err == nil && r.Suspended })
	step("unsuspend", func() error { return s.SetSuspended(ctx, handles.Handle{Name: "alice", Domain: "kez.lat"}, false) }, alice,
		func(r handles.Record, err error) bool { return err == nil && !r.Suspended })
	step("add device", func() error { _, err := s.AddDevice(ctx, storetest.Dev(alice, phone, "phone")); return err }, phone,
		func(r handles.Record, err error) bool { return err == nil && r.Key == alice && r.Device == phone })
	step("revoke device", func() error { return s.RevokeDevice(ctx, alice, phone, time.Time{}) }, phone,
		func(_ handles.Record, err error) bool { return errors.Is(err, handles.ErrDeviceRevoked) })
	step("claim bob", func() error { _, err := s.Claim(ctx, storetest.Rec("bob", bob)); return err }, bob,
		func(r handles.Record, err error) bool { return err == nil && r.Handle.Name == "bob" })

	// A released handle is gone from the view: the store is asked, and
	// agrees.
	if err := s.Release(ctx, handles.Handle{Name: "alice", Domain: "kez.lat"}); err != nil {
		t.Fatal(err)
	}
	syncView(t, v)
	if _, err, answer := lookupBoth(t, s, v, alice); !errors.Is(err, handles.ErrNotFound) || answer != AnswerStore {
		t.Fatalf("released: %v, answered by %s", err, answer)
	}
	st := v.Stats()
	if !st.Loaded || st.Age != 0 || st.Keys != 3 { // bob's entry and index, the phone's record
		t.Fatalf("stats %+v", st)
	}
}

// TestViewNewKeyAsksStore: a key registered after the view's last update
// is answered by the store.
func TestViewNewKeyAsksStore(t *testing.T) {
	srv := natstest.Run(t, natstest.JetStreamConf)
	var hold sync.Mutex
	s, v := viewOf(t, srv.ClientURL(), withBeforeApply(func() { hold.Lock(); hold.Unlock() }))
	hold.Lock() // the watch is stuck from now on
	defer hold.Unlock()
	if _, err := s.Claim(context.Background(), storetest.Rec("carol", storetest.Key(4))); err != nil {
		t.Fatal(err)
	}
	if r, err, answer := lookupBoth(t, s, v, storetest.Key(4)); err != nil || r.Handle.Name != "carol" || answer != AnswerStore {
		t.Fatalf("%+v, %v, answered by %s", r, err, answer)
	}
}

// TestViewStale: with the store unreachable the view answers until its
// last check is MaxStale old, then lookups go to the store and fail.
func TestViewStale(t *testing.T) {
	srv := natstest.Run(t, natstest.JetStreamConf)
	c := newClock()
	s, v := viewOf(t, srv.ClientURL(), WithClock(c.now), WithMaxStale(10*time.Second))
	if _, err := s.Claim(context.Background(), storetest.Rec("dave", storetest.Key(5))); err != nil {
		t.Fatal(err)
	}
	syncView(t, v)
	srv.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c.add(10 * time.Second)
	if r, err := v.LookupKey(ctx, storetest.Key(5)); err != nil || r.Handle.Name != "dave" {
		t.Fatalf("within MaxStale, with the store down: %+v, %v", r, err)
	}
	c.add(time.Millisecond)
	if _, err := v.LookupKey(ctx, storetest.Key(5)); err == nil {
		t.Fatal("a view older than MaxStale answered")
	}
	st := v.Stats()
	if st.Lookups[AnswerView] != 1 || st.Lookups[AnswerStale] != 1 || st.Age != 10*time.Second+time.Millisecond || v.Fresh() {
		t.Fatalf("stats %+v", st)
	}
}

// TestViewFlood: a flood of registrations the watch cannot keep up with
// does not go unnoticed: the view stops answering once its last reached
// check is MaxStale old, and answers again once it caught up.
func TestViewFlood(t *testing.T) {
	srv := natstest.Run(t, natstest.JetStreamConf)
	c := newClock()
	var mu sync.Mutex
	s, v := viewOf(t, srv.ClientURL(), WithClock(c.now), withBeforeApply(func() { mu.Lock(); mu.Unlock() }))
	mu.Lock() // the watch is stuck from now on
	ctx := context.Background()
	const n = 200
	for i := range n {
		if _, err := s.Claim(ctx, storetest.Rec(fmt.Sprintf("flood%d", i), storetest.Key(100+i))); err != nil {
			t.Fatal(err)
		}
	}
	// A check now cannot be reached.
	cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := v.Sync(cctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a check was reached while the watch was stuck: %v", err)
	}
	c.add(DefaultMaxStale + time.Millisecond)
	if v.Fresh() {
		t.Fatal("a view behind a flood stays fresh")
	}
	if _, err, answer := lookupBoth(t, s, v, storetest.Key(100)); err != nil || answer != AnswerStale {
		t.Fatalf("%v, answered by %s", err, answer)
	}
	mu.Unlock()
	syncView(t, v)
	for i := range n {
		if r, err, answer := lookupBoth(t, s, v, storetest.Key(100+i)); err != nil || answer != AnswerView || r.Handle.Name != fmt.Sprintf("flood%d", i) {
			t.Fatalf("%d: %+v, %v, answered by %s", i, r, err, answer)
		}
	}
}

// TestViewAttacker: the view applies the store's rules to what it holds,
// so values that would make the store refuse a key make the view refuse
// it too.
func TestViewAttacker(t *testing.T) {
	srv := natstest.Run(t, natstest.JetStreamConf)
	s, v := viewOf(t, srv.ClientURL())
	ctx := context.Background()
	alice, mallory, dev := storetest.Key(1), storetest.Key(6), storetest.Key(7)
	if _, err := s.Claim(ctx, storetest.Rec("alice", alice)); err != nil {
		t.Fatal(err)
	}
	// A look-alike claim is refused, and leaves nothing to look up.
	if _, err := s.Claim(ctx, storetest.Rec("a1ice", mallory)); !errors.Is(err, handles.ErrTaken) {
		t.Fatalf("look-alike claim: %v", err)
	}
	put := func(k string, value []byte) {
		t.Helper()
		if _, err := s.kv.Put(ctx, k, value); err != nil {
			t.Fatal(err)
		}
	}
	// An index naming alice's handle for mallory's key: alice's entry is
	// another key's, so it is no record of mallory.
	put(indexKey(mallory), encodeIndex(handles.Handle{Name: "alice", Domain: "kez.lat"}))
	// A device record of alice's for a key she never linked, spelled in
	// another case: the store never reads that bucket key.
	rec := device{V: formatVersion, Person: alice.String(), Added: 1}
	put("device."+fmt.Sprintf("%x", dev[:]), rec.encode())
	// An unreadable index: the store's error, from the store.
	put(indexKey(dev), []byte(`{"v":9}`))
	syncView(t, v)
	if _, err, _ := lookupBoth(t, s, v, mallory); !errors.Is(err, handles.ErrNotFound) {
		t.Fatalf("mallory: %v", err)
	}
	if _, err, answer := lookupBoth(t, s, v, dev); err == nil || errors.Is(err, handles.ErrNotFound) || answer != AnswerStore {
		t.Fatalf("unreadable index: %v, answered by %s", err, answer)
	}
	if r, err, answer := lookupBoth(t, s, v, alice); err != nil || r.Key != alice || answer != AnswerView {
		t.Fatalf("alice: %+v, %v, %s", r, err, answer)
	}
}

func TestViewOptions(t *testing.T) {
	s := &Store{}
	for _, opts := range [][]ViewOption{
		{WithMaxStale(0)},
		{WithCheckInterval(-time.Second)},
		{WithMaxStale(time.Second), WithCheckInterval(2 * time.Second)},
		{WithClock(nil)},
	} {
		if _, err := s.NewView(context.Background(), opts...); !errors.Is(err, ErrBadViewOption) {
			t.Errorf("%v", err)
		}
	}
}
