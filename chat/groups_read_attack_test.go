package chat

import (
	"testing"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
)

// TestGroupReadForged: read receipts of a group (group-read) count only
// from a current member and only for the receiver's own sent messages of
// that group. A stranger naming alice's message, and a member naming a
// message alice never sent (another member's, or a made-up ID), record
// nothing: alice's ReadBy stays empty and group_reads holds no row.
func TestGroupReadForged(t *testing.T) {
	tr := newTrio(t, stacktest.Options{})
	ctx := testCtx(t)
	dave := newPerson(t, tr.st, "dave", 1)
	d := dave.devices[0]

	sent := mustGroupSend(t, tr.a, tr.name, "from alice")
	bobs := mustGroupSend(t, tr.b, tr.name, "from bob")
	waitGroupText(t, tr.a, tr.name, "from bob")

	read := func(from *testClient, r groupRead) {
		t.Helper()
		ts, err := from.strangerTargets(ctx, tr.alice.user.Key)
		if err != nil {
			t.Fatal(err)
		}
		p, err := from.publish(ctx, ts, Message{Kind: KindGroupRead, Body: marshalGroupRead(r)}, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	read(d, groupRead{Group: tr.name, IDs: []MessageID{sent.ID}})
	made := NewMessageID()
	ids := []MessageID{bobs.ID, made}
	if string(made[:]) < string(bobs.ID[:]) {
		ids = []MessageID{made, bobs.ID}
	}
	read(tr.c, groupRead{Group: tr.name, IDs: ids})
	// What each sent after the reads arrives after them.
	for _, m := range []struct {
		c    *testClient
		text string
	}{{d, "dave's marker"}, {tr.c, "carol's marker"}} {
		if _, err := m.c.SendKey(ctx, tr.alice.user.Key, m.text); err != nil {
			t.Fatal(err)
		}
	}
	receiveUntil(t, tr.a, "the markers", func(int) bool {
		return countRows(t, tr.a, `SELECT COUNT(*) FROM messages WHERE body IN (?, ?)`, []byte("dave's marker"), []byte("carol's marker")) == 2
	})
	if n := countRows(t, tr.a, `SELECT COUNT(*) FROM group_reads`); n != 0 {
		t.Fatalf("%d reads recorded", n)
	}
	es, err := tr.a.GroupHistory(ctx, tr.name, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if len(e.ReadBy) != 0 {
			t.Fatalf("%q read by %v", e.Text(), e.ReadBy)
		}
	}
}
