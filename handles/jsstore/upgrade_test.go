package jsstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/handles/storetest"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/nats-io/nats.go/jetstream"
)

// legacyBucket creates the bucket name as the previous version did and
// writes recs into it as its Claim did: the entry at
// name.<domain>.<the name without . - _> and the key's index.
func legacyBucket(t *testing.T, js jetstream.JetStream, name string, recs []handles.Record) jetstream.KeyValue {
	t.Helper()
	ctx := context.Background()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: name, History: 1, MaxValueSize: MaxValueSize, Storage: jetstream.FileStorage,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		lk, err := legacyKey(r.Handle)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Create(ctx, lk, newEntry(r, r.UpdatedAt).encode()); err != nil {
			t.Fatalf("the previous version refused %s: %v", r.Handle, err)
		}
		if _, err := kv.Create(ctx, indexKey(r.Key), encodeIndex(r.Handle)); err != nil {
			t.Fatal(err)
		}
	}
	return kv
}

func bucketKeys(t *testing.T, kv jetstream.KeyValue) map[string]bool {
	t.Helper()
	keys, err := kv.Keys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, k := range keys {
		out[k] = true
	}
	return out
}

// TestUpgradeKeepsLookAlikesOut opens a bucket written under skeleton
// rule 1: the handles registered then block their look-alikes under the
// current rule, and names that rule 1 let in side by side (mallory and
// rnallory) both keep working.
func TestUpgradeKeepsLookAlikesOut(t *testing.T) {
	ctx := context.Background()
	srv := natstest.Run(t, natstest.JetStreamConf)
	js := natstest.ConnectJetStream(t, srv.ClientURL())

	// Positive control: on a rule-1 bucket whose keys are not moved (the
	// rule marker says they already were), a look-alike gets in.
	ckv := legacyBucket(t, js, "CONTROL", storetest.Legacy())
	if _, err := ckv.Create(ctx, ruleKey, fmt.Appendf(nil, `{"v":1,"rule":%d}`, handles.SkeletonVersion)); err != nil {
		t.Fatal(err)
	}
	control, err := New(ctx, js, WithBucket("CONTROL"))
	if err != nil {
		t.Fatal(err)
	}
	if created, err := control.Claim(ctx, storetest.Rec("a1ice", storetest.Key(50))); err != nil || !created {
		t.Fatalf("positive control: a look-alike on an unmigrated bucket: %v %v", created, err)
	}

	kv := legacyBucket(t, js, DefaultBucket, storetest.Legacy())
	s, err := New(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	// Entries moved to their current keys, but for the twins of names
	// that hold them, which stay and are listed.
	keys := bucketKeys(t, kv)
	for k, want := range map[string]bool{
		"name.kez.lat.allce": true, "name.kez.lat.alice": false, // moved
		"name.kez.lat.dara": true, "name.kez.lat.clara": false, // moved
		"name.kez.lat.mallory": true, "name.kez.lat.rnallory": true, // rnallory is mallory's twin
		"name.kez.lat.walter": true, "name.kez.lat.vvalter": true, // vvalter is walter's twin
		"name.kez.lat.bob": true, ruleKey: true,
	} {
		if keys[k] != want {
			t.Errorf("after the upgrade the bucket key %s exists: %v, want %v", k, keys[k], want)
		}
	}
	if e, _, _, err := s.entryOf(ctx, hd("mallory")); err != nil || e == nil || strings.Join(e.Twins, ",") != "rnallory" {
		t.Fatalf("mallory's twins: %+v %v", e, err)
	}
	storetest.RunUpgraded(t, s)

	// A second New is a no-op; a store on the other connection agrees.
	s2, err := New(ctx, natstest.ConnectJetStream(t, srv.ClientURL()))
	if err != nil {
		t.Fatal(err)
	}
	if r, err := s2.Lookup(ctx, hd("alice")); err != nil || r.Key != storetest.Key(2) {
		t.Fatalf("alice through a second store: %+v %v", r, err)
	}
	if _, err := s2.Claim(ctx, storetest.Rec("ai1ce", storetest.Key(60))); !errors.Is(err, handles.ErrTaken) {
		t.Fatalf("a look-alike through a second store: %v", err)
	}
}

// TestUpgradeConcurrently: replicas that start at once on a rule-1
// bucket move every entry exactly once and agree on the result.
func TestUpgradeConcurrently(t *testing.T) {
	ctx := context.Background()
	srv := natstest.Run(t, natstest.JetStreamConf)
	var recs []handles.Record
	for i := range 24 {
		recs = append(recs, storetest.Rec(fmt.Sprintf("li%d", i), storetest.Key(i+1))) // li.. → ll..: every one moves
	}
	recs = append(recs, storetest.Rec("ll0", storetest.Key(100))) // li0's look-alike: a twin
	kv := legacyBucket(t, natstest.ConnectJetStream(t, srv.ClientURL()), DefaultBucket, recs)

	const replicas = 4
	stores := make([]*Store, replicas)
	errs := make([]error, replicas)
	var wg sync.WaitGroup
	for i := range replicas {
		js := natstest.ConnectJetStream(t, srv.ClientURL())
		wg.Go(func() { stores[i], errs[i] = New(ctx, js) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
	}
	keys := bucketKeys(t, kv)
	left := 0
	for _, r := range recs {
		for i, s := range stores {
			if got, err := s.Lookup(ctx, r.Handle); err != nil || got.Key != r.Key {
				t.Fatalf("replica %d: lookup %s: %+v %v", i, r.Handle, got, err)
			}
		}
		lk, _ := legacyKey(r.Handle)
		if keys[lk] {
			left++
		}
	}
	// li0 and ll0 share the skeleton llo: whichever moved first holds
	// it, the other stayed as its twin. Every other entry moved.
	if left != 1 || keys["name.kez.lat.li0"] == keys["name.kez.lat.ll0"] {
		t.Fatalf("%d legacy keys left (li0 %v, ll0 %v); want the twin's alone", left, keys["name.kez.lat.li0"], keys["name.kez.lat.ll0"])
	}
	if _, err := stores[0].Claim(ctx, storetest.Rec("l10", storetest.Key(200))); !errors.Is(err, handles.ErrTaken) {
		t.Fatalf("a look-alike after a concurrent upgrade: %v", err)
	}
}

// TestNewerSkeletonRule: a bucket of a newer rule is refused.
func TestNewerSkeletonRule(t *testing.T) {
	ctx := context.Background()
	srv := natstest.Run(t, natstest.JetStreamConf)
	js := natstest.ConnectJetStream(t, srv.ClientURL())
	kv := legacyBucket(t, js, DefaultBucket, nil)
	b, _ := json.Marshal(ruleValue{V: 1, Rule: handles.SkeletonVersion + 1})
	if _, err := kv.Create(ctx, ruleKey, b); err != nil {
		t.Fatal(err)
	}
	if _, err := New(ctx, js); !errors.Is(err, handles.ErrNewerSkeletonRule) {
		t.Fatalf("New on a newer rule's bucket: %v", err)
	}
}

// TestLeftOverKeepsTwinsSkeleton: when the entry holding a skeleton is an
// unfinished claim that another claim may take over, its twins still hold
// the skeleton: the takeover turns it into the released lock, not a gap.
func TestLeftOverKeepsTwinsSkeleton(t *testing.T) {
	ctx := context.Background()
	srv := natstest.Run(t, natstest.JetStreamConf)
	js := natstest.ConnectJetStream(t, srv.ClientURL())
	walter, vvalter := storetest.Rec("walter", storetest.Key(1)), storetest.Rec("vvalter", storetest.Key(2))
	kv := legacyBucket(t, js, DefaultBucket, []handles.Record{vvalter})
	// walter's claim was cut short after its entry: no index.
	if _, err := kv.Create(ctx, "name.kez.lat.walter", newEntry(walter, walter.UpdatedAt).encode()); err != nil {
		t.Fatal(err)
	}
	s, err := New(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	s.now = func() time.Time { return time.Now().Add(time.Hour) } // past the orphan grace
	// Positive control: the left-over itself is invisible, the twin is not.
	if _, err := s.Lookup(ctx, hd("walter")); !errors.Is(err, handles.ErrNotFound) {
		t.Fatalf("lookup of the left-over: %v", err)
	}
	if r, err := s.Lookup(ctx, hd("vvalter")); err != nil || r.Key != storetest.Key(2) {
		t.Fatalf("lookup of the twin: %+v %v", r, err)
	}
	_, err = s.Claim(ctx, storetest.Rec("vva1ter", storetest.Key(3)))
	var te *handles.TakenError
	if !errors.As(err, &te) || te.Holder != hd("vvalter") {
		t.Fatalf("claim of a look-alike over the left-over: %v; want a *TakenError naming vvalter", err)
	}
	// Once the twin is released, the skeleton is free.
	if err := s.Release(ctx, hd("vvalter")); err != nil {
		t.Fatal(err)
	}
	if created, err := s.Claim(ctx, storetest.Rec("vva1ter", storetest.Key(3))); err != nil || !created {
		t.Fatalf("claim after the twin's release: %v %v", created, err)
	}
}
