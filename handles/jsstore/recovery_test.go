package jsstore

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/handles/storetest"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/nats-io/nats.go/jetstream"
)

// newTestStore returns a store on a fresh server and its raw bucket, to
// leave behind what a chat-server killed mid-claim leaves.
func newTestStore(t *testing.T) (*Store, jetstream.KeyValue) {
	t.Helper()
	ctx := context.Background()
	srv := natstest.Run(t, natstest.JetStreamConf)
	js := natstest.ConnectJetStream(t, srv.ClientURL())
	s, err := New(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	return s, kv
}

func hd(name string) handles.Handle { return handles.Handle{Name: name, Domain: "kez.lat"} }

// putEntry writes an entry without its index: a claim cut short after
// its first write.
func putEntry(t *testing.T, kv jetstream.KeyValue, name string, key int) {
	t.Helper()
	rec := storetest.Rec(name, storetest.Key(key))
	nk, err := nameKey(rec.Handle)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), nk, newEntry(rec, rec.UpdatedAt).encode()); err != nil {
		t.Fatal(err)
	}
}

func TestCutShortClaimIsInvisible(t *testing.T) {
	ctx := context.Background()
	s, kv := newTestStore(t)
	putEntry(t, kv, "alice", 1)
	if _, err := s.Lookup(ctx, hd("alice")); !errors.Is(err, handles.ErrNotFound) {
		t.Fatalf("Lookup of an unfinished claim: %v", err)
	}
	if _, err := s.LookupKey(ctx, storetest.Key(1)); !errors.Is(err, handles.ErrNotFound) {
		t.Fatalf("LookupKey of an unfinished claim: %v", err)
	}
	if err := s.SetSuspended(ctx, hd("alice"), true); !errors.Is(err, handles.ErrNotFound) {
		t.Fatalf("SetSuspended of an unfinished claim: %v", err)
	}
	// Within the grace another key may not take it: the claim may still
	// be under way.
	if _, err := s.Claim(ctx, storetest.Rec("al.ice", storetest.Key(2))); !errors.Is(err, handles.ErrTaken) {
		t.Fatalf("another key within the grace: %v", err)
	}
	// The same key's retry finishes it.
	if created, err := s.Claim(ctx, storetest.Rec("alice", storetest.Key(1))); err != nil || !created {
		t.Fatalf("retry: %v %v", created, err)
	}
	if r, err := s.LookupKey(ctx, storetest.Key(1)); err != nil || r.Handle != hd("alice") {
		t.Fatalf("LookupKey after the retry: %+v %v", r, err)
	}
}

func TestLeftOverTakenAfterGrace(t *testing.T) {
	ctx := context.Background()
	s, kv := newTestStore(t)
	putEntry(t, kv, "alice", 1)
	s.now = func() time.Time { return time.Now().Add(DefaultOrphanGrace + time.Second) }
	if created, err := s.Claim(ctx, storetest.Rec("al.ice", storetest.Key(2))); err != nil || !created {
		t.Fatalf("another key after the grace: %v %v", created, err)
	}
	if r, err := s.Lookup(ctx, hd("al.ice")); err != nil || r.Key != storetest.Key(2) {
		t.Fatalf("lookup: %+v %v", r, err)
	}
	// The first key, retrying late, finds the name taken.
	if _, err := s.Claim(ctx, storetest.Rec("alice", storetest.Key(1))); !errors.Is(err, handles.ErrTaken) {
		t.Fatalf("late retry: %v", err)
	}
}

func TestLeftOverOfKeyWithAnotherHandle(t *testing.T) {
	ctx := context.Background()
	s, kv := newTestStore(t)
	if _, err := s.Claim(ctx, storetest.Rec("bob", storetest.Key(1))); err != nil {
		t.Fatal(err)
	}
	putEntry(t, kv, "alice", 1) // key 1 holds bob; alice is a left-over
	if _, err := s.Lookup(ctx, hd("alice")); !errors.Is(err, handles.ErrNotFound) {
		t.Fatalf("lookup of the left-over: %v", err)
	}
	// Key 1 itself may not complete it: it holds bob. That removes it.
	if _, err := s.Claim(ctx, storetest.Rec("alice", storetest.Key(1))); !errors.Is(err, handles.ErrKeyHasHandle) {
		t.Fatalf("the holder's claim: %v", err)
	}
	putEntry(t, kv, "alice", 1)
	// Another key takes it at once, without waiting for the grace.
	if created, err := s.Claim(ctx, storetest.Rec("alice", storetest.Key(2))); err != nil || !created {
		t.Fatalf("another key: %v %v", created, err)
	}
	if r, err := s.LookupKey(ctx, storetest.Key(1)); err != nil || r.Handle != hd("bob") {
		t.Fatalf("key 1 lost bob: %+v %v", r, err)
	}
	// A key's own left-over of a look-alike does not block it.
	putEntry(t, kv, "carol", 3)
	if created, err := s.Claim(ctx, storetest.Rec("car.ol", storetest.Key(3))); err != nil || !created {
		t.Fatalf("claim over the key's own left-over look-alike: %v %v", created, err)
	}
}

// TestReleaseCutShort: a release that deleted the entry but not the
// index leaves a stale index that nothing believes.
func TestReleaseCutShort(t *testing.T) {
	ctx := context.Background()
	s, kv := newTestStore(t)
	if _, err := s.Claim(ctx, storetest.Rec("alice", storetest.Key(1))); err != nil {
		t.Fatal(err)
	}
	nk, _ := nameKey(hd("alice"))
	if err := kv.Delete(ctx, nk); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LookupKey(ctx, storetest.Key(1)); !errors.Is(err, handles.ErrNotFound) {
		t.Fatalf("LookupKey through a stale index: %v", err)
	}
	if created, err := s.Claim(ctx, storetest.Rec("alice", storetest.Key(2))); err != nil || !created {
		t.Fatalf("another key takes the released name: %v %v", created, err)
	}
	if _, err := s.LookupKey(ctx, storetest.Key(1)); !errors.Is(err, handles.ErrNotFound) {
		t.Fatalf("the stale index points at a name another key holds: %v", err)
	}
	if created, err := s.Claim(ctx, storetest.Rec("bob", storetest.Key(1))); err != nil || !created {
		t.Fatalf("the key claims anew over its stale index: %v %v", created, err)
	}
}

func TestUnreadableValues(t *testing.T) {
	ctx := context.Background()
	s, kv := newTestStore(t)
	for _, tc := range []struct{ value, want string }{
		{`not json`, "not JSON"},
		{`{"v":2,"domain":"kez.lat","name":"alice","key":"x"}`, "upgrade the program"},
		{`{"v":1,"domain":"kez.lat","name":"alice","key":"not a key"}`, "key"},
		{`{"domain":"kez.lat","name":"alice"}`, "no format version"},
	} {
		nk, _ := nameKey(hd("alice"))
		if _, err := kv.Put(ctx, nk, []byte(tc.value)); err != nil {
			t.Fatal(err)
		}
		_, err := s.Lookup(ctx, hd("alice"))
		if err == nil || errors.Is(err, handles.ErrNotFound) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("lookup over %s: %v; want an error saying %q", tc.value, err, tc.want)
		}
		if _, err := s.Claim(ctx, storetest.Rec("alice", storetest.Key(1))); err == nil || !strings.Contains(err.Error(), "unreadable") {
			t.Errorf("claim over %s: %v", tc.value, err)
		}
		// Nothing was overwritten.
		if e, err := kv.Get(ctx, nk); err != nil || string(e.Value()) != tc.value {
			t.Errorf("the unreadable value was changed: %v", err)
		}
	}
	if _, err := kv.Put(ctx, indexKey(storetest.Key(2)), []byte(`{"v":1}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LookupKey(ctx, storetest.Key(2)); err == nil || errors.Is(err, handles.ErrNotFound) {
		t.Errorf("LookupKey over a bad index: %v", err)
	}
}
