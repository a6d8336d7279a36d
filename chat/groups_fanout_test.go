package chat

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/chatserver"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/session"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// memberWithPrekey registers a user who runs no client but published a
// prekey, as a client that ran once leaves it.
func memberWithPrekey(t testing.TB, st *stacktest.Stack, name string) *stacktest.User {
	t.Helper()
	u := st.NewUser(t, name)
	pk, err := session.NewPrekey(rand.Reader, u.Identity, 1, time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sc := &sigchain.Client{BaseURL: st.SigServerURL}
	if err := sc.PublishPrekey(testCtx(t), &pk.Public); err != nil {
		t.Fatal(err)
	}
	return u
}

// inboxCopies returns what the stream holds in to's inbox from the
// device from: each message's data and Nats-Msg-Id, fetched as the
// operator could, and handed back (NAK: the recipient's client gets them
// at once).
func inboxCopies(t testing.TB, st *stacktest.Stack, to, from kez.PublicKey) (data [][]byte, ids []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := st.JetStream(t).Consumer(ctx, callout.DefaultStream, callout.ConsumerName(to))
	if err != nil {
		t.Fatalf("the consumer of %s: %v", to, err)
	}
	batch, err := c.FetchNoWait(100)
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		if m.Subject() == callout.InboxSubjectPrefix+to.String()+"."+from.String() {
			data = append(data, m.Data())
			ids = append(ids, m.Headers().Get(jetstream.MsgIDHeader))
		}
		if err := m.Nak(); err != nil {
			t.Fatal(err)
		}
	}
	if err := batch.Error(); err != nil {
		t.Fatal(err)
	}
	return data, ids
}

// outboxMulti returns the envelopes of messages to many devices waiting
// in c's outbox, by device.
func outboxMulti(t testing.TB, c *Client) map[kez.PublicKey][]byte {
	t.Helper()
	rows, err := c.db.db.Query(`SELECT device, envelope FROM outbox WHERE multi = 1`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[kez.PublicKey][]byte{}
	for rows.Next() {
		var d string
		var env []byte
		if err := rows.Scan(&d, &env); err != nil {
			t.Fatal(err)
		}
		k, err := kez.ParsePublicKey(d)
		if err != nil {
			t.Fatal(err)
		}
		out[k] = env
	}
	return out
}

// TestGroupFanOutSurvivesACrash: the envelopes of a message to many
// devices are in the outbox once sealed; a client that stops before
// publishing them publishes them when it next starts, the same bytes,
// each stored once under <device>-<id>-<recipient>, which is also the ID
// a one-to-one send of that envelope would be stored under: a copy is
// never stored twice, whichever way it went.
func TestGroupFanOutSurvivesACrash(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au := st.NewUser(t, "alice")
	home := filepath.Join(t.TempDir(), "alice")
	alice := openClientIn(t, st, au, home)
	bob, carol := memberWithPrekey(t, st, "bob"), memberWithPrekey(t, st, "carol")
	ctx := testCtx(t)
	var ts []target
	for _, u := range []*stacktest.User{bob, carol} {
		pts, err := alice.memberTargets(ctx, u.Key, u.Handle.String())
		if err != nil {
			t.Fatal(err)
		}
		ts = append(ts, pts...)
	}
	head, err := cid.Parse(testHead)
	if err != nil {
		t.Fatal(err)
	}
	body := marshalGroupUpdate(groupUpdate{Group: "team@" + st.Domain, Head: head, Seqno: 2, SigServer: st.SigServerURL})
	id, copies, err := alice.sealFan(ctx, ts, Message{Kind: KindGroupUpdate, Body: body}, nil)
	if err != nil || len(copies) != 2 {
		t.Fatalf("sealFan: %d copies, %v", len(copies), err)
	}
	sealed := outboxMulti(t, alice.Client)
	if len(sealed) != 2 {
		t.Fatalf("the outbox holds %d", len(sealed))
	}
	// The crash: the client goes before publishing anything.
	if err := alice.Close(); err != nil {
		t.Fatal(err)
	}
	js := st.JetStream(t)
	for _, u := range []*stacktest.User{bob, carol} {
		if n := storedOn(t, js, "kez.v1.inbox."+u.Key.String()+"."+au.Key.String()); n != 0 {
			t.Fatalf("%s holds %d before the restart", u.Name, n)
		}
	}
	again := openClientIn(t, st, au, home)
	// The start publishes the outbox in the background; this publishes
	// whatever it has not yet, and returns once the gate answered.
	again.republishMulti(ctx)
	if left := outboxMulti(t, again.Client); len(left) != 0 {
		t.Fatalf("%d envelopes left in the outbox", len(left))
	}
	for _, u := range []*stacktest.User{bob, carol} {
		data, ids := inboxCopies(t, st, u.Key, au.Key)
		want := au.Key.String() + "-" + id.String() + "-" + u.Key.String()
		if len(data) != 1 || !bytes.Equal(data[0], sealed[u.Key]) || ids[0] != want {
			t.Fatalf("%s holds %d copies, IDs %q (want %q), the sealed bytes: %v", u.Name, len(data), ids, want, len(data) == 1 && bytes.Equal(data[0], sealed[u.Key]))
		}
	}
	// The one-to-one path with the outbox's publish ID: a duplicate.
	m := nats.NewMsg(sendSubject(bob.Key, au.Key))
	m.Data = sealed[bob.Key]
	m.Header.Set(jetstream.MsgIDHeader, publishID(id, 0, bob.Key, false))
	fut, err := again.js.PublishMsgAsync(m)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case ack := <-fut.Ok():
		if !ack.Duplicate {
			t.Fatalf("a one-to-one publish of the same envelope was stored again: %+v", ack)
		}
	case err := <-fut.Err():
		t.Fatal(err)
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	if n := storedOn(t, js, "kez.v1.inbox."+bob.Key.String()+"."+au.Key.String()); n != 1 {
		t.Fatalf("bob holds %d", n)
	}
}

// TestGroupMemberWithoutPrekey: a member whose client never ran (no
// prekey published) gets the group-update and the group key as format 1
// envelopes sealed to their person's key, as a one-to-one message would
// be; when their client first starts it joins the group and reads what
// was sent before.
func TestGroupMemberWithoutPrekey(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice := openClient(t, st, st.NewUser(t, "alice"))
	carol := openClient(t, st, st.NewUser(t, "carol"))
	bu := st.NewUser(t, "bob") // registered, never ran a client
	ctx := testCtx(t)
	name := "team@" + st.Domain
	if _, err := alice.CreateGroup(ctx, "team", ""); err != nil {
		t.Fatal(err)
	}
	if err := alice.AddGroupMembers(ctx, "team", "bob", "carol"); err != nil {
		t.Fatal(err)
	}
	mustGroupSend(t, alice, name, "before bob ever ran")
	waitGroupText(t, carol, name, "before bob ever ran")
	// bob's inbox: the group-update and the key in format 1, then the
	// group envelope.
	data, _ := inboxCopies(t, st, bu.Key, alice.DeviceKey())
	var forms []string
	for _, d := range data {
		forms = append(forms, wireForm(d))
	}
	if len(forms) != 3 || forms[0] != "v1" || forms[1] != "v1" || envelopeVersionOf(data[2]) != envelopeV3 {
		t.Fatalf("bob's inbox holds %q", forms)
	}
	bob := openClient(t, st, bu)
	g := waitGroup(t, bob, name, func(g *Group) bool { return len(g.Members) == 3 })
	if g.Left || g.Role != "member" {
		t.Fatalf("bob sees %+v", g)
	}
	e := waitGroupText(t, bob, name, "before bob ever ran")
	if e.From != alice.user.Key || !e.Incoming {
		t.Fatalf("bob stored %+v", e)
	}
	if s := bob.Stats(); s.Rejected != 0 {
		t.Fatalf("bob's stats %+v", s)
	}
}

// gateRefusals reads the chat-server's count of refusals for reason.
func gateRefusals(t testing.TB, st *stacktest.Stack, reason string) string {
	t.Helper()
	resp, err := http.Get(st.ServerURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	prefix := `kez_chat_gate_refusals_total{reason="` + reason + `"} `
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			return v
		}
	}
	return "0"
}

// TestGroupKeyRefusedIsSentAgain: a member device whose copy of the
// group key the gate refused (here: alice's bucket for it is spent) is
// not recorded as having the key: the next send distributes it to that
// device again, where a recorded device would get nothing.
func TestGroupKeyRefusedIsSentAgain(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{MailLimits: chatserver.MailLimits{RecipientRate: 0.001, RecipientBurst: 1}})
	alice := openClient(t, st, st.NewUser(t, "alice"))
	bu := memberWithPrekey(t, st, "bob")
	ctx := testCtx(t)
	if _, err := alice.CreateGroup(ctx, "team", ""); err != nil {
		t.Fatal(err)
	}
	// The group-update takes alice's one copy to bob.
	if err := alice.AddGroupMembers(ctx, "team", "bob"); err != nil {
		t.Fatal(err)
	}
	had := func() int {
		var n int
		if err := alice.db.db.QueryRow(`SELECT count(*) FROM group_skey_sent WHERE device = ?`, bu.Key.String()).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for i, want := range []string{"2", "4"} {
		// The key and the message are refused for bob.
		alice.SendGroup(ctx, "team", fmt.Sprint("message ", i))
		if got := gateRefusals(t, st, "recipient_quota"); got != want || had() != 0 {
			t.Fatalf("after send %d: %s refusals (want %s: the key tried again), bob recorded %d times", i, got, want, had())
		}
		if left := outboxMulti(t, alice.Client); len(left) != 0 {
			t.Fatalf("the outbox holds %d", len(left))
		}
	}
}
