package chat

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
)

// deliver receives as receiveN does, until n new messages are stored, and
// returns the wire form (wireForm) of every delivery it processed, in
// order.
func deliver(t *testing.T, c *testClient, n int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var forms []string
	for stored := 0; stored < n; {
		msgs, err := c.cons.Fetch(ctx, fetchBatch, time.Second)
		if err != nil && ctx.Err() == nil {
			t.Fatalf("%s fetches: %v", c.user.Name, err)
		}
		if ctx.Err() != nil {
			t.Fatalf("%s: %d of %d messages before the deadline (stats %+v)", c.user.Name, stored, n, c.Stats())
		}
		for _, m := range msgs {
			forms = append(forms, wireForm(m.Data()))
		}
		fresh, err := c.process(ctx, msgs)
		if err != nil {
			t.Fatal(err)
		}
		stored += len(fresh)
	}
	return forms
}

// wireForm says what an envelope is: "v1", "v2 handshake", "v2 message".
func wireForm(env []byte) string {
	switch v := envelopeVersionOf(env); {
	case v == 1:
		return "v1"
	case v == envelopeV2 && len(env) > 5 && env[5] == 1:
		return "v2 handshake"
	case v == envelopeV2 && len(env) > 5 && env[5] == 2:
		return "v2 message"
	}
	return "unknown"
}

func countRows(t *testing.T, c *testClient, query string, args ...any) int {
	t.Helper()
	var n int
	if err := c.db.db.QueryRow(query, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// sealV2 seals text for the contact `to` as a send does (in the newest
// session, or a new one; the state is stored) but does not publish it.
func sealV2(t *testing.T, c *testClient, to, text string) []byte {
	t.Helper()
	return sealV2In(t, c, to, text, false)
}

// sealV2In is sealV2; fresh starts a new session.
func sealV2In(t *testing.T, c *testClient, to, text string, fresh bool) []byte {
	t.Helper()
	ctx := testCtx(t)
	cs, err := c.contact(ctx, to)
	if err != nil {
		t.Fatal(err)
	}
	tgt := contactTarget(&cs.c)
	m := Message{ID: NewMessageID(), From: c.me, To: tgt.key(), SentAt: time.Now().Truncate(time.Millisecond), Kind: KindText, Body: []byte(text)}
	plan, err := c.planSeal(ctx, tgt, &m, fresh)
	if err != nil {
		t.Fatal(err)
	}
	var env []byte
	if err := c.db.write(ctx, func(tx *sql.Tx) error {
		env, err = c.sealTx(tx, tgt, plan, &m)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if envelopeVersionOf(env) != envelopeV2 {
		t.Fatalf("sealed %s, want v2", wireForm(env))
	}
	return env
}

// openRolledBack opens env as c in a transaction that is rolled back, and
// returns the error.
func openRolledBack(t *testing.T, c *testClient, env []byte, from kez.PublicKey) error {
	t.Helper()
	errRollback := errors.New("rolled back")
	var openErr error
	err := c.db.write(testCtx(t), func(tx *sql.Tx) error {
		_, openErr = c.openV2(tx, newBatchSessions(), env, from, time.Now())
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatal(err)
	}
	return openErr
}

// befriended starts a stack with two clients, alice and bob, each the
// other's contact.
func befriended(t *testing.T) (au, bu *stacktest.User, alice, bob *testClient) {
	t.Helper()
	st := stacktest.Start(t, stacktest.Options{})
	au, bu = st.NewUser(t, "alice"), st.NewUser(t, "bob")
	alice, bob = openClient(t, st, au), openClient(t, st, bu)
	mustAdd(t, alice, "bob")
	mustAdd(t, bob, "alice")
	return au, bu, alice, bob
}

// befriendedAfterOne is befriended, once bob stored alice's first message,
// "one".
func befriendedAfterOne(t *testing.T) (au, bu *stacktest.User, alice, bob *testClient) {
	t.Helper()
	au, bu, alice, bob = befriended(t)
	mustSend(t, alice, "bob", "one")
	receiveN(t, bob, 1)
	return au, bu, alice, bob
}

// damageSessions overwrites every session state c stores with peer by one
// that does not parse.
func damageSessions(t *testing.T, c *testClient, peer kez.PublicKey) {
	t.Helper()
	if _, err := c.db.db.Exec(`UPDATE sessions SET state = X'00' WHERE peer = ?`, peer.String()); err != nil {
		t.Fatal(err)
	}
}
