package jsstore

import (
	"context"
	"strings"
	"testing"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/handles/storetest"
)

// FuzzViewStore feeds arbitrary watched updates (a bucket key and its
// value: the bucket is the operator's) to a view: it keeps only values
// the store's decoders accept, under the key the store would read, its
// lookups do not panic, and a delete leaves nothing behind.
func FuzzViewStore(f *testing.F) {
	k := storetest.Key(1)
	e := newEntry(storetest.Rec("alice", k), storetest.Rec("alice", k).UpdatedAt).encode()
	d := device{V: formatVersion, Person: k.String(), Name: "phone", Added: 1}.encode()
	for _, s := range []struct{ k, v string }{
		{"name.kez.lat.alice", string(e)},
		{indexKey(k), string(encodeIndex(handles.Handle{Name: "alice", Domain: "kez.lat"}))},
		{deviceKey(storetest.Key(2)), string(d)},
		{"name.kez.lat.alice", `{"v":1,"domain":"kez.lat","name":"al ice"}`},
		{"key." + strings.ToLower(k.String()), `{"v":1,"domain":"kez.lat","name":"alice"}`},
		{"device.Uxyz", `{"v":1}`},
		{"meta.skeleton_rule", `{"v":1,"rule":2}`},
		{"key.", ``},
	} {
		f.Add(s.k, []byte(s.v))
	}
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		v := emptyView()
		v.store(key, value, true)
		for ek, en := range v.entries {
			if _, err := decodeEntry(value); err != nil || ek != key || en.Key != "" {
				t.Fatalf("kept the entry %q: %v", ek, err)
			}
		}
		for pk := range v.indexes {
			if _, err := decodeIndex(value); err != nil || indexKey(pk) != key {
				t.Fatalf("kept the index %q under %s: %v", key, pk, err)
			}
		}
		for pk := range v.devices {
			if _, err := decodeDevice(value); err != nil || deviceKey(pk) != key {
				t.Fatalf("kept the device %q under %s: %v", key, pk, err)
			}
		}
		v.loaded = true
		for pk := range v.indexes {
			_, _ = v.lookupKey(context.Background(), pk)
		}
		for pk := range v.devices {
			_, _ = v.lookupKey(context.Background(), pk)
		}
		v.store(key, nil, false)
		if n := len(v.entries) + len(v.indexes) + len(v.devices) + len(v.bad); n != 0 {
			t.Fatalf("%d values left after deleting %q", n, key)
		}
	})
}
