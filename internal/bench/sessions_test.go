package bench

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/session"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// testSessionRig checks the format v2 half of the messaging rig on st:
// the sessions are established before anything is timed, every session
// message of a throughput run opens at its receiver (counted one by one),
// and an envelope that does not open is counted as failed, never as
// opened, without changing the receiver's session: tampered, replayed,
// on another sender's subject, v1 instead of v2, or holding another
// message's ID.
func testSessionRig(ctx context.Context, t *testing.T, st *Stack) {
	users, err := st.Register(ctx, "kbm", 3, 3)
	if err != nil {
		t.Fatal(err)
	}
	rig, err := newMsgRig(ctx, st, 2, users)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rig.close)
	if err := rig.setupSessions(time.Now()); err != nil {
		t.Fatal(err)
	}
	body := []byte("a message of the session rig")
	s0, s1, to := rig.senders[0], rig.senders[1], rig.receivers[0]
	for _, s := range rig.senders {
		if a, b := s.seals[to.Key], to.opens[s.Key.String()]; a == nil || b == nil || !a.Established() || !b.Established() || a.ID() != b.ID() {
			t.Fatalf("the session %s → %s is not set up at both ends", s.Name, to.Name)
		}
	}
	msg, err := rig.message(modeSession, s0, to, body)
	if err != nil {
		t.Fatal(err)
	}
	if h, err := session.ParseHeader(msg.Data); err != nil || h.Type != session.TypeMessage || h.Sender != s0.Key || h.Recipient != to.Key {
		t.Fatalf("the rig sends %+v, %v: want a message (type 2) from %s to %s", h, err, s0.Name, to.Name)
	}
	deliver := func(mode int32, from *msgUser, msg *nats.Msg) {
		t.Helper()
		if _, err := rig.deliverOne(ctx, mode, from, msg, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	deliver(modeSession, s0, msg)
	if rig.opened.Load() != 1 || rig.failed.Load() != 0 {
		t.Fatalf("opened %d, failed %d, want 1 and 0: %v", rig.opened.Load(), rig.failed.Load(), rig.lastErr.get())
	}

	const n = 41 // not a multiple of the senders: one sends one more
	if _, err := rig.throughput(ctx, modeSession, body, n); err != nil {
		t.Fatal(err)
	}
	if got := rig.opened.Load(); got != 1+n || rig.failed.Load() != 0 {
		t.Fatalf("opened %d of %d session messages, %d failed: %v", got, 1+n, rig.failed.Load(), rig.lastErr.get())
	}

	// Abuse: each envelope below reaches the receiver and must be refused.
	fresh := func(from, to *msgUser, data []byte) *nats.Msg {
		m := nats.NewMsg(callout.SendSubjectPrefix + to.Key.String() + "." + from.Key.String())
		m.Header.Set(jetstream.MsgIDHeader, chat.NewMessageID().String())
		m.Data = data
		return m
	}
	good, err := rig.message(modeSession, s0, to, body)
	if err != nil {
		t.Fatal(err)
	}
	stolen, err := rig.message(modeSession, s0, to, body)
	if err != nil {
		t.Fatal(err)
	}
	v1, err := rig.message(modeSealed, s0, to, body)
	if err != nil {
		t.Fatal(err)
	}
	otherID, err := s0.seals[to.Key].Seal(nil, sessionPlaintext(chat.NewMessageID(), body))
	if err != nil {
		t.Fatal(err)
	}
	tampered := slices.Clone(good.Data)
	tampered[len(tampered)-1] ^= 1
	opened := rig.opened.Load()
	for _, c := range []struct {
		name string
		from *msgUser
		msg  *nats.Msg
		want error // nil: any error
	}{
		{"tampered", s0, fresh(s0, to, tampered), session.ErrDecrypt},
		{"on another sender's subject", s1, fresh(s1, to, stolen.Data), session.ErrWrongSender},
		{"v1 in a session", s0, fresh(s0, to, v1.Data), session.ErrUnsupportedVersion},
		{"another message's ID", s0, fresh(s0, to, otherID), nil},
	} {
		failed := rig.failed.Load()
		deliver(modeSession, c.from, c.msg)
		err := rig.lastErr.get()
		if rig.failed.Load() != failed+1 || rig.opened.Load() != opened {
			t.Errorf("%s: failed %d → %d, opened %d → %d: want it refused", c.name, failed, rig.failed.Load(), opened, rig.opened.Load())
		}
		if c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	// The refused envelopes left the receiver's session as it was: the
	// genuine ones open, in either order, and once only.
	for _, m := range []*nats.Msg{stolen, good} {
		deliver(modeSession, s0, m)
	}
	if got := rig.opened.Load(); got != opened+2 {
		t.Errorf("opened %d after the refusals, want %d: %v", got, opened+2, rig.lastErr.get())
	}
	failed := rig.failed.Load()
	deliver(modeSession, s0, fresh(s0, to, good.Data))
	if rig.failed.Load() != failed+1 || !errors.Is(rig.lastErr.get(), session.ErrReplay) {
		t.Errorf("a replay: failed %d → %d, %v: want it refused as a replay", failed, rig.failed.Load(), rig.lastErr.get())
	}
}
