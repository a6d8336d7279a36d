package jsstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/sigchain/storetest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestDeviceLayout: an add_device link and the device's index entry land
// together, the entry on kez.v1.chain.devices.<device>; a revocation
// rewrites the entry. Every eldest link comes with its orphan marker.
func TestDeviceLayout(t *testing.T) {
	ctx := context.Background()
	s, js := newStore(t)
	now := time.Now()
	p := storetest.NewPerson(t, storetest.Identity(t, 1), "alice@kez.lat", now)
	dev := storetest.Identity(t, 2)
	p.AddDevice(t, dev, now)
	for _, l := range p.Links {
		if err := s.Append(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	st, err := js.Stream(ctx, DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	if !st.CachedInfo().Config.AllowAtomicPublish {
		t.Fatal("the stream does not allow atomic batches")
	}
	entry := func() (deviceEntry, uint64) {
		t.Helper()
		m, err := st.GetLastMsgForSubject(ctx, "kez.v1.chain.devices."+dev.PublicKey().String())
		if err != nil {
			t.Fatal(err)
		}
		var e deviceEntry
		if err := json.Unmarshal(m.Data, &e); err != nil {
			t.Fatal(err)
		}
		return e, m.Sequence
	}
	if m, err := st.GetLastMsgForSubject(ctx, "kez.v1.chain."+p.ID.PublicKey().String()); err != nil {
		t.Fatalf("the marker of a chain with a handle: %v", err)
	} else if eldest, err := st.GetLastMsgForSubject(ctx, "kez.v1.chain."+p.ID.PublicKey().String()+".1"); err != nil || eldest.Sequence != m.Sequence+1 {
		t.Fatalf("the eldest link at %v (%v), its marker at %d", eldest, err, m.Sequence)
	}
	e, seq := entry()
	link, err := st.GetLastMsgForSubject(ctx, "kez.v1.chain."+p.ID.PublicKey().String()+".2")
	if err != nil {
		t.Fatal(err)
	}
	// The add's batch: the link, the entry, and the entry again on
	// condition that the device has no chain.
	if e != (deviceEntry{Person: p.ID.PublicKey().String()}) || seq != link.Sequence+2 {
		t.Fatalf("entry %+v at %d, the link at %d", e, seq, link.Sequence)
	}
	if err := s.Append(ctx, p.RevokeDevice(t, dev.PublicKey(), now)); err != nil {
		t.Fatal(err)
	}
	if e, _ := entry(); !e.Revoked {
		t.Fatalf("entry after the revocation %+v", e)
	}
}

// TestOldStreamAllowsBatches: a stream made by an earlier version, without
// atomic batches, is given them, and device links append to it.
func TestOldStreamAllowsBatches(t *testing.T) {
	ctx := context.Background()
	s, _ := onStream(t, jetstream.StreamConfig{Name: DefaultStream, Subjects: []string{DefaultSubjectPrefix + ".>"}, DenyDelete: true, AllowDirect: true}, 1)
	if !s.st.CachedInfo().Config.AllowAtomicPublish {
		t.Fatal("the old stream does not allow atomic batches")
	}
	now := time.Now()
	p := storetest.NewPerson(t, storetest.Identity(t, 5), "", now)
	dev := storetest.Identity(t, 6)
	p.AddDevice(t, dev, now)
	for _, l := range p.Links {
		if err := s.Append(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	if e, err := s.Device(ctx, dev.PublicKey()); err != nil || e.Person != p.ID.PublicKey() {
		t.Fatalf("%+v, %v", e, err)
	}
}

// TestCollectDevicesAfterAStop stops a collection between its fence and
// its purge: the next collection still finds the fenced chain's devices
// and drops them, so they may join another chain.
func TestCollectDevicesAfterAStop(t *testing.T) {
	ctx := context.Background()
	s, js := newStore(t)
	now := time.Now()
	orphan := storetest.NewPerson(t, storetest.Identity(t, 1), "", now)
	dev := storetest.Identity(t, 2)
	orphan.AddDevice(t, dev, now)
	for _, l := range orphan.Links {
		if err := s.Append(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := js.Publish(ctx, "kez.v1.chain."+orphan.ID.PublicKey().String()+".gc", nil); err != nil {
		t.Fatal(err)
	}
	if n, err := s.CollectOrphans(ctx, now.Add(time.Hour)); n != 1 || err != nil {
		t.Fatalf("collecting the rest: %d, %v", n, err)
	}
	if _, err := s.Device(ctx, dev.PublicKey()); !errors.Is(err, sigchain.ErrNoDevice) {
		t.Fatalf("the collected chain's device: %v, want ErrNoDevice", err)
	}
	other := storetest.NewPerson(t, storetest.Identity(t, 3), "other@kez.lat", now)
	other.AddDevice(t, dev, now)
	for _, l := range other.Links {
		if err := s.Append(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
}

// newStore opens a store with the default names on a fresh server.
func newStore(t *testing.T) (*Store, jetstream.JetStream) {
	t.Helper()
	srv := natstest.Run(t, natstest.JetStreamConf)
	js := natstest.ConnectJetStream(t, srv.ClientURL())
	s, err := New(context.Background(), js)
	if err != nil {
		t.Fatal(err)
	}
	return s, js
}

// TestAbandonedBatch: a writer that stops inside an atomic batch (its
// first message staged, no commit: a crash, a lost connection) leaves
// nothing in the stream, neither the link nor the device's entry, and
// holds nothing up: the same add is stored afterwards, and so is an
// eldest link whose batch was abandoned the same way.
func TestAbandonedBatch(t *testing.T) {
	ctx := context.Background()
	s, js := newStore(t)
	now := time.Now()
	p := storetest.NewPerson(t, storetest.Identity(t, 1), "alice@kez.lat", now)
	if err := s.Append(ctx, p.Links[0]); err != nil {
		t.Fatal(err)
	}
	dev := storetest.Identity(t, 2)
	add := p.AddDevice(t, dev, now)
	other := storetest.NewPerson(t, storetest.Identity(t, 3), "", now).Links[0]
	nc := js.Conn()
	for i, m := range []*nats.Msg{
		{Subject: "kez.v1.chain." + p.ID.PublicKey().String() + ".2", Data: add.Bytes(), Header: nats.Header{}},
		{Subject: "kez.v1.chain." + other.Key().String(), Header: nats.Header{}},
	} {
		m.Header.Set("Nats-Batch-Id", fmt.Sprintf("abandoned%d", i))
		m.Header.Set("Nats-Batch-Sequence", "1")
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := st.Info(ctx); err != nil || info.State.Msgs != 2 { // alice's marker and eldest link
		t.Fatalf("after the abandoned batches: %+v, %v", info.State, err)
	}
	if _, err := s.Device(ctx, dev.PublicKey()); !errors.Is(err, sigchain.ErrNoDevice) {
		t.Fatalf("the device of an abandoned batch: %v", err)
	}
	for _, l := range []*sigchain.Link{add, other} {
		if err := s.Append(ctx, l); err != nil {
			t.Fatalf("appending after an abandoned batch: %v", err)
		}
	}
	if e, err := s.Device(ctx, dev.PublicKey()); err != nil || e.Person != p.ID.PublicKey() {
		t.Fatalf("%+v, %v", e, err)
	}
}
