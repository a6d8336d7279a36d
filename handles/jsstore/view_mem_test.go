package jsstore

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/handles/storetest"
)

// emptyView is a view with no watch, filled by hand.
func emptyView() *View {
	v := &View{cfg: viewConfig{maxStale: DefaultMaxStale, interval: DefaultCheckInterval, now: time.Now}}
	v.reads = reads{src: v}
	v.reset()
	return v
}

// TestViewMemory measures what a view holds per user (an entry and its
// key's index, the values a claim writes) for 10,000 users, and keeps it
// under 1 KiB.
func TestViewMemory(t *testing.T) {
	const users = 10_000
	at := time.UnixMilli(1_800_000_000_000)
	type kv struct {
		k string
		v []byte
	}
	vals := make([]kv, 0, 2*users)
	for i := range users {
		rec := storetest.Rec(fmt.Sprintf("user%d", i), storetest.Key(i))
		rec.EncryptionKey = make([]byte, 32)
		nk, err := nameKey(rec.Handle)
		if err != nil {
			t.Fatal(err)
		}
		vals = append(vals, kv{nk, newEntry(rec, at).encode()}, kv{indexKey(rec.Key), encodeIndex(rec.Handle)})
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	v := emptyView()
	for _, x := range vals {
		v.store(x.k, x.v, true)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / users
	t.Logf("%d users: %.0f bytes of heap per user in the view", users, per)
	if per > 1024 {
		t.Errorf("%.0f bytes per user; want at most 1024", per)
	}
	v.loaded = true
	v.freshAt.Store(time.Now().UnixNano())
	if r, err := v.LookupKey(context.Background(), storetest.Key(users-1)); err != nil || r.Handle != (handles.Handle{Name: fmt.Sprint("user", users-1), Domain: "kez.lat"}) {
		t.Fatalf("%+v, %v", r, err)
	}
	runtime.KeepAlive(vals)
}
