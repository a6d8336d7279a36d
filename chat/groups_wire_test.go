package chat

// Removal locks a member out, and a new member cannot read the past,
// shown on the wire (issue 17): every client talks through a recording
// proxy in front of NATS; the attacker holds every group envelope that
// crossed it and every receiving key a member's chat.db ever held.

import (
	"bytes"
	"database/sql"
	"errors"
	"testing"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/internal/testenv/tcprec"
	"github.com/kez-lat/kez-chat/session"
)

// groupEnv is a format 3 envelope that crossed the wire.
type groupEnv struct {
	env   []byte
	h     session.GroupHeader
	first int
}

// recordedGroup returns every distinct group envelope in the NATS
// messages that crossed the proxy (inside multi-recipient sends, and as
// deliveries), in the order they first crossed.
func recordedGroup(t *testing.T, rec *tcprec.Proxy) []groupEnv {
	t.Helper()
	msgs, err := rec.NATSMessages()
	if err != nil {
		t.Fatal(err)
	}
	var out []groupEnv
	seen := map[string]bool{}
	for _, m := range msgs {
		i := bytes.Index(m.Payload, []byte(envelopeMagic+"\x03"))
		if i < 0 {
			continue
		}
		env := m.Payload[i:]
		if seen[string(env)] {
			continue
		}
		h, err := session.ParseGroupHeader(env)
		if err != nil {
			continue // a KEZM\x03 inside something else
		}
		seen[string(env)] = true
		out = append(out, groupEnv{env: env, h: h, first: m.Seq})
	}
	return out
}

// receivingKeys returns the receiving keys (stored form) in c's chat.db.
func receivingKeys(t *testing.T, c *testClient) [][]byte {
	t.Helper()
	rows, err := c.db.db.Query(`SELECT state FROM group_rkeys`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out [][]byte
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// opens reports, for each of envs a key among keys belongs to (its
// group, epoch and sending device), what that key made of it: the text
// it opened, or "(used)" for a message the key's owner already opened
// (the key moved past it). An envelope no key belongs to is left out.
func opens(t *testing.T, keys [][]byte, envs []groupEnv) map[int]string {
	t.Helper()
	out := map[int]string{}
	for i, e := range envs {
		for _, k := range keys {
			rk, err := session.ParseReceiverKey(k)
			if err != nil {
				t.Fatal(err)
			}
			pt, err := rk.Open(e.env)
			switch {
			case err == nil:
				m, _ := parseInnerV2(pt, rk.Device(), rk.Device())
				out[i] = "?"
				if m != nil {
					out[i] = string(m.Body)
				}
			case errors.Is(err, session.ErrReplay) || errors.Is(err, session.ErrOlderThanKey):
				out[i] = "(used)"
			case !errors.Is(err, session.ErrWrongGroup) && !errors.Is(err, session.ErrWrongSender):
				t.Errorf("a key of group %x epoch %d device %s gives %v on an envelope of epoch %d device %s", rk.GID(), rk.Epoch(), rk.Device(), err, e.h.Epoch, e.h.Device)
			}
		}
	}
	return out
}

// TestGroupWireRemovalAndJoin: alice, bob and carol talk in a group;
// alice removes carol and then adds dave; everyone sends after each
// change. Against every group envelope recorded: the receiving keys
// carol held when she was removed (all she ever had, taken from her
// chat.db before her client learned of the removal) open what was sent
// before the removal and nothing after; dave's (all he has at the end)
// open nothing sent before he joined, and what was sent after.
func TestGroupWireRemovalAndJoin(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	rec := startWiretap(t, st)
	alice := newPerson(t, st, "alice", 1, via(rec))
	bob := newPerson(t, st, "bob", 1, via(rec))
	carol := newPerson(t, st, "carol", 1, via(rec))
	dave := newPerson(t, st, "dave", 1, via(rec))
	a, b, c, d := alice.devices[0], bob.devices[0], carol.devices[0], dave.devices[0]
	ctx := testCtx(t)
	name := "club@" + st.Domain

	if _, err := a.CreateGroup(ctx, "club", ""); err != nil {
		t.Fatal(err)
	}
	if err := a.AddGroupMembers(ctx, "club", "bob", "carol"); err != nil {
		t.Fatal(err)
	}
	waitGroup(t, b, name, func(g *Group) bool { return g.Epoch == 2 })
	waitGroup(t, c, name, func(g *Group) bool { return g.Epoch == 2 })
	mustAccept(t, b, name)
	mustAccept(t, c, name)
	mustGroupSend(t, a, name, "before-1 alice")
	mustGroupSend(t, b, name, "before-2 bob")
	mustGroupSend(t, c, name, "before-3 carol")
	for _, x := range []*testClient{a, b, c} {
		for _, s := range []string{"before-1 alice", "before-2 bob", "before-3 carol"} {
			waitGroupText(t, x, name, s)
		}
	}
	carolKeys := receivingKeys(t, c)
	if len(carolKeys) != 2 {
		t.Fatalf("carol holds %d receiving keys, want alice's and bob's", len(carolKeys))
	}
	removal := rec.Mark()

	if err := a.RemoveGroupMembers(ctx, "club", "carol"); err != nil {
		t.Fatal(err)
	}
	waitGroup(t, b, name, func(g *Group) bool { return g.Epoch == 3 })
	mustGroupSend(t, a, name, "after-1 alice")
	mustGroupSend(t, b, name, "after-2 bob")
	waitGroupText(t, b, name, "after-1 alice")
	waitGroupText(t, a, name, "after-2 bob")
	// Carol learns she was removed; a send of hers is refused.
	waitGroup(t, c, name, func(g *Group) bool { return g.Left })
	if _, err := c.SendGroup(ctx, name, "let me in"); !errors.Is(err, ErrNotGroupMember) {
		t.Fatalf("carol sends after her removal: %v", err)
	}
	join := rec.Mark()

	if err := a.AddGroupMembers(ctx, "club", "dave"); err != nil {
		t.Fatal(err)
	}
	waitGroup(t, d, name, func(g *Group) bool { return g.Epoch == 4 })
	mustAccept(t, d, name)
	waitGroup(t, b, name, func(g *Group) bool { return g.Epoch == 4 })
	mustGroupSend(t, a, name, "joined-1 alice")
	mustGroupSend(t, b, name, "joined-2 bob")
	waitGroupText(t, d, name, "joined-1 alice")
	waitGroupText(t, d, name, "joined-2 bob")
	if got := groupTexts(t, d, name); len(got) != 2 {
		t.Fatalf("dave's group history %q: the past is not his", got)
	}
	if got := groupTexts(t, c, name); len(got) != 3 {
		t.Fatalf("carol's group history %q: nothing after her removal", got)
	}

	envs := recordedGroup(t, rec)
	var before, during, after int
	for i, e := range envs {
		byCarol := opens(t, carolKeys, envs[i:i+1])
		switch {
		case e.first < int(removal):
			before++
			if e.h.Device != c.DeviceKey() && len(byCarol) == 0 {
				t.Errorf("carol's keys do not open %s's envelope of epoch %d sent before her removal (the attack is broken)", e.h.Device, e.h.Epoch)
			}
		default:
			if e.first < int(join) {
				during++
			} else {
				after++
			}
			if len(byCarol) > 0 {
				t.Errorf("a key carol held reads %q, sent after her removal (epoch %d)", byCarol[0], e.h.Epoch)
			}
			if e.h.Epoch < 3 {
				t.Errorf("an envelope of epoch %d was sent after the removal at epoch 3", e.h.Epoch)
			}
		}
	}
	daveKeys := receivingKeys(t, d)
	for i, e := range envs {
		got := opens(t, daveKeys, envs[i:i+1])
		switch {
		case e.first < int(join) && len(got) > 0:
			t.Errorf("a key dave holds reads %q, sent before he joined", got[0])
		case e.first >= int(join) && len(got) == 0:
			t.Errorf("dave's keys do not open an envelope sent after he joined (the attack is broken)")
		}
	}
	if before < 3 || during < 2 || after < 2 {
		t.Fatalf("recorded %d/%d/%d group envelopes before the removal, between, after the join", before, during, after)
	}
	// Carol's chat.db holds no key of the group any more.
	var n int
	if err := c.db.db.QueryRow(`SELECT count(*) FROM group_rkeys`).Scan(&n); err != nil && !errors.Is(err, sql.ErrNoRows) {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("carol keeps %d receiving keys after her removal", n)
	}
	t.Logf("%d group envelopes recorded: %d before the removal, %d between, %d after dave joined", len(envs), before, during, after)
}
