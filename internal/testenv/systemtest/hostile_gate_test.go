package systemtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/chat"
	kezclient "github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/internal/inbox"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/natsconn"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// rawUser is a registered user logged in to NATS with raw nats.go: an
// attacker with one registered key, talking to the broker directly.
type rawUser struct {
	*user
	nc   *nats.Conn
	errs chan error
}

func userLogin(t testing.TB, natsURL string, u *user) *rawUser {
	t.Helper()
	r := &rawUser{user: u, errs: make(chan error, 4096)}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	nc, err := natsconn.Connect(ctx, natsURL, u.id, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case r.errs <- err:
		default:
		}
	}))
	if err != nil {
		t.Fatalf("login %s: %v", u.name, err)
	}
	t.Cleanup(nc.Close)
	r.nc = nc
	return r
}

// send asks the gate to store body for to and returns the answer: "" for
// an acknowledgement, else the error's description (or the request's).
func (r *rawUser) send(to kez.PublicKey, body []byte, timeout time.Duration) string {
	m := nats.NewMsg(callout.SendSubjectPrefix + to.String() + "." + r.key.String())
	m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s-%d", r.name, time.Now().UnixNano()))
	m.Data = body
	resp, err := r.nc.RequestMsg(m, timeout)
	if err != nil {
		return "request: " + err.Error()
	}
	var a struct {
		Stream string `json:"stream"`
		Error  *struct {
			Code        int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(resp.Data, &a); err != nil {
		return "answer: " + err.Error()
	}
	if a.Error != nil {
		return fmt.Sprintf("%d %s", a.Error.Code, a.Error.Description)
	}
	return ""
}

// streamSnapshot is what an operator sees of the inbox stream: its
// configuration and state, every consumer's state, and every message.
type streamSnapshot struct {
	config    string
	lastSeq   uint64
	consumers map[string]string // name → config and state, but for pending
	pending   map[string]uint64 // name → messages waiting
	msgs      map[uint64]string // sequence → subject, headers, body digest
	leader    string
}

func snapshot(t testing.TB, js jetstream.JetStream) *streamSnapshot {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, callout.DefaultStream)
	if err != nil {
		t.Fatalf("the inbox stream: %v", err)
	}
	info := st.CachedInfo()
	cfg, _ := json.Marshal(info.Config)
	s := &streamSnapshot{config: string(cfg), lastSeq: info.State.LastSeq, consumers: map[string]string{}, pending: map[string]uint64{}, msgs: map[uint64]string{}}
	if info.Cluster != nil {
		s.leader = info.Cluster.Leader
	}
	names := st.ConsumerNames(ctx)
	for name := range names.Name() {
		c, err := st.Consumer(ctx, name)
		if err != nil {
			t.Fatalf("consumer %s: %v", name, err)
		}
		ci := c.CachedInfo()
		cc, _ := json.Marshal(ci.Config)
		s.consumers[name] = fmt.Sprintf("%s delivered=%d/%d ackfloor=%d/%d ackpending=%d redelivered=%d",
			cc, ci.Delivered.Consumer, ci.Delivered.Stream, ci.AckFloor.Consumer, ci.AckFloor.Stream,
			ci.NumAckPending, ci.NumRedelivered)
		s.pending[name] = ci.NumPending
	}
	if err := names.Err(); err != nil {
		t.Fatal(err)
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		h, _ := json.Marshal(m.Header)
		s.msgs[seq] = fmt.Sprintf("%s %s %x", m.Subject, h, sha256.Sum256(m.Data))
	}
	return s
}

// TestHostileReplySweep: mallory, with one registered key, publishes to
// every subject she may publish to, each with reply subjects naming every
// JetStream API verb on the inbox stream and on other users' consumers,
// acknowledgement subjects, other users' inbox, send, consumer, pull and
// deliver subjects, the system account's and a key-value bucket's, and
// with bodies valid, invalid and empty. Afterwards the stream's
// configuration, every other user's consumer and every stored message are
// unchanged, and what was added is under mallory's own sender token
// (issue 13, finding 1). Her attempts to make more consumers leave her
// one (finding 3).
func TestHostileReplySweep(t *testing.T) {
	st := startProcStack(t, procOptions{Admin: true, NoHTTPLimits: true, ChatArgs: []string{"--send-burst", "100000", "--pull-burst", "100000", "--remove-read-after", "1"}})
	alice, bob, mallory := st.register(t, "alice"), st.register(t, "bob"), st.register(t, "mallory")
	a, b, m := userLogin(t, st.NATSURL, alice), userLogin(t, st.NATSURL, bob), userLogin(t, st.NATSURL, mallory)
	S, A, B, M := callout.DefaultStream, alice.key.String(), bob.key.String(), mallory.key.String()

	// Alice has mail waiting, one message delivered and not acknowledged,
	// and one acknowledged; bob has mail waiting.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i := range 4 {
		if ans := b.send(alice.key, []byte(fmt.Sprintf("for alice %d", i)), 10*time.Second); ans != "" {
			t.Fatalf("bob's message to alice: %s", ans)
		}
		if ans := a.send(bob.key, []byte(fmt.Sprintf("for bob %d", i)), 10*time.Second); ans != "" {
			t.Fatalf("alice's message to bob: %s", ans)
		}
	}
	if _, err := inbox.Open(ctx, a.nc, A, time.Hour); err != nil {
		t.Fatal(err)
	}
	got, err := inbox.NewPuller(a.nc, A, S).Fetch(ctx, 2, 10*time.Second)
	if err != nil || len(got) != 2 {
		t.Fatalf("alice's fetch: %d, %v", len(got), err)
	}
	if err := got[0].DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	js := st.AdminJetStream(t)
	eventually(t, 20*time.Second, "alice's acknowledgement, and the gate's removal of what she read", func() bool {
		c, err := js.Consumer(ctx, S, A)
		st, serr := js.Stream(ctx, S)
		return err == nil && c.CachedInfo().AckFloor.Stream > 0 && serr == nil && st.CachedInfo().State.Msgs == 7
	})
	before := snapshot(t, js)
	if len(before.consumers) != 2 || len(before.msgs) != 7 {
		t.Fatalf("setup: %d consumers, %d messages", len(before.consumers), len(before.msgs))
	}

	var replies []string
	for _, v := range []string{
		"STREAM.DELETE.S", "STREAM.PURGE.S", "STREAM.UPDATE.S", "STREAM.INFO.S", "STREAM.MSG.DELETE.S",
		"STREAM.MSG.GET.S", "STREAM.LEADER.STEPDOWN.S", "STREAM.SNAPSHOT.S", "STREAM.RESTORE.S", "STREAM.CREATE.EVIL",
		"STREAM.LIST", "STREAM.NAMES", "DIRECT.GET.S", "DIRECT.GET.S.kez.v1.inbox.A.B", "INFO", "META.LEADER.STEPDOWN",
		"CONSUMER.CREATE.S", "CONSUMER.CREATE.S.M", "CONSUMER.CREATE.S.A.kez.v1.inbox.A.>", "CONSUMER.CREATE.S.M.kez.v1.inbox.>",
		"CONSUMER.DURABLE.CREATE.S.A", "CONSUMER.DELETE.S.A", "CONSUMER.DELETE.S.B", "CONSUMER.PAUSE.S.A",
		"CONSUMER.UNPIN.S.A", "CONSUMER.MSG.NEXT.S.A", "CONSUMER.MSG.NEXT.S.B", "CONSUMER.INFO.S.A",
		"CONSUMER.LEADER.STEPDOWN.S.A", "CONSUMER.LIST.S", "CONSUMER.NAMES.S",
	} {
		v = strings.NewReplacer(".S", "."+S, ".A", "."+A, ".B", "."+B, ".M", "."+M).Replace(v)
		replies = append(replies, "$JS.API."+v)
	}
	ack := "$JS.ACK." + S + "." + A + ".1.1.1.1.0"
	replies = append(replies,
		callout.InboxSubjectPrefix+A+"."+B, callout.InboxSubjectPrefix+B+"."+A,
		callout.SendSubjectPrefix+A+"."+B, callout.SendSubjectPrefix+B+"."+A,
		callout.ConsumerSubjectPrefix+A, callout.PullSubjectPrefix+A, callout.PullSubjectPrefix+B,
		callout.DeliverSubjectPrefix+A+".x", "kez.v1.ack."+S+"."+A+".1.1.1.1.0",
		"$SYS.REQ.SERVER.PING", "$SYS.REQ.ACCOUNT.CHAT.CONNZ", "$SYS.REQ.USER.INFO",
		"$KV.KEZ_HANDLES.key."+A, "$KV.ANY.x", "_INBOX."+A+".x",
	)
	reserved := []string{ack, "$JS.ACK." + S + "." + B + ".1.2.2.1.0", "_R_.abcdef.ghijkl"}

	type target struct {
		subject string
		valid   []byte
	}
	stranger := stacktest.Identity("nobody-registered").PublicKey().String()
	targets := []target{
		{callout.SendSubjectPrefix + A + "." + M, []byte("mallory to alice")},
		{callout.SendSubjectPrefix + M + "." + M, []byte("mallory to herself")},
		{callout.SendSubjectPrefix + stranger + "." + M, []byte("to nobody")},
		{callout.ConsumerSubjectPrefix + M, nil},
		{callout.PullSubjectPrefix + M, []byte(`{"batch":5,"no_wait":true,"deliver":"t1"}`)},
		{callout.AckSubjectPrefix + M, []byte("+ACK $JS.ACK." + S + "." + M + ".1.1.1.1.0\n")},
		{callout.P2PSubjectPrefix + A, []byte(`{}`)},
		{"_INBOX." + A + ".x", []byte(`{}`)},
	}
	bodies := func(valid []byte) [][]byte {
		return [][]byte{valid, []byte(`{"batch":"x","config":{"durable_name":"x","direct":true,"sourcing":true}}`), nil}
	}
	sent := 0
	for _, tg := range targets {
		for _, reply := range replies {
			for _, body := range bodies(tg.valid) {
				if err := m.nc.PublishRequest(tg.subject, reply, body); err != nil {
					t.Fatal(err)
				}
				sent++
			}
		}
	}
	// Replies the server reserves are refused outright.
	for _, reply := range reserved {
		m.nc.PublishRequest(targets[0].subject, reply, []byte("x"))
		m.nc.Flush()
		waitFor(t, m.errs, "Publish with Reply of \""+reply+"\"")
	}
	// Mallory tries for more consumers through the gate: still one.
	for i := range 50 {
		req := nats.NewMsg(callout.ConsumerSubjectPrefix + M)
		req.Header.Set("Kez-Ack-Wait", fmt.Sprintf("%ds", i+1))
		req.Data = []byte(`{"config":{"durable_name":"x","direct":true,"sourcing":true}}`)
		if _, err := m.nc.RequestMsg(req, 10*time.Second); err != nil {
			t.Fatalf("consumer request %d: %v", i, err)
		}
	}
	// The gate has handled everything mallory sent before this answer.
	if ans := m.send(mallory.key, []byte("last"), 20*time.Second); ans != "" {
		t.Fatalf("mallory's last send: %s", ans)
	}
	if _, err := inbox.Open(ctx, b.nc, B, 0); err != nil { // and bob's own requests still work
		t.Fatal(err)
	}

	after := snapshot(t, js)
	if after.config != before.config {
		t.Errorf("the stream's configuration changed:\n%s\n%s", before.config, after.config)
	}
	for name, was := range before.consumers {
		if now, ok := after.consumers[name]; !ok || now != was {
			t.Errorf("consumer %s changed:\n before %s\n after  %s", name, was, now)
		}
	}
	extra := 0
	for name := range after.consumers {
		if _, ok := before.consumers[name]; !ok {
			extra++
			if name != M {
				t.Errorf("a consumer %q appeared", name)
			}
		}
	}
	for seq, was := range before.msgs {
		if now := after.msgs[seq]; now != was {
			t.Errorf("message %d changed: %q → %q", seq, was, now)
		}
	}
	added, addedFor := 0, map[string]uint64{}
	for seq, now := range after.msgs {
		if seq <= before.lastSeq {
			continue
		}
		added++
		subj := strings.Fields(now)[0]
		if !strings.HasSuffix(subj, "."+M) {
			t.Errorf("message %d stored under %s, not mallory's token", seq, subj)
		}
		addedFor[strings.Split(subj, ".")[3]]++
	}
	// Waiting mail grew by what mallory sent each inbox, and no more.
	for name, was := range before.pending {
		if now := after.pending[name]; now != was+addedFor[name] {
			t.Errorf("consumer %s: %d waiting, want %d + %d mallory sent", name, now, was, addedFor[name])
		}
	}
	t.Logf("reply sweep: %d publishes (%d subjects × %d reply subjects × 3 bodies) + %d reserved replies refused + 50 consumer requests; "+
		"stream, %d consumers and %d messages unchanged; %d messages added, all under mallory's token; mallory holds %d consumer",
		sent, len(targets), len(replies), len(reserved), len(before.consumers), len(before.msgs), added, extra)
	if added == 0 {
		t.Error("positive control: mallory's valid sends stored nothing")
	}
}

// waitFor waits for an error from errs that contains text.
func waitFor(t testing.TB, errs <-chan error, text string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case err := <-errs:
			if strings.Contains(err.Error(), text) {
				return
			}
		case <-timeout:
			t.Fatalf("no error containing %q", text)
		}
	}
}

// TestReplySubjectAttackOldLayout is the sweep's positive control: the
// attack of finding 1 against the layout KEZ had before (users in the
// account that holds the stream, with a pull right on their own consumer)
// deletes the stream, so a sweep that finds nothing is evidence, not
// luck. An invalid pull request whose reply subject is the stream's
// delete API is answered by the consumer, inside the account, to that
// subject.
func TestReplySubjectAttackOldLayout(t *testing.T) {
	ns := natstest.Run(t, `
accounts {
  CHAT {
    jetstream: enabled
    users: [
      { user: admin, password: a }
      { user: u, password: u, permissions: {
          publish: [ "$JS.API.CONSUMER.MSG.NEXT.S.u" ], subscribe: [ "_INBOX.>" ] } }
    ]
  }
}
`)
	admin, err := nats.Connect(ns.ClientURL(), nats.UserInfo("admin", "a"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	js, _ := jetstream.New(admin)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"x.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, "S", jetstream.ConsumerConfig{Durable: "u", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "x.1", []byte("queued mail")); err != nil {
		t.Fatal(err)
	}
	u, err := nats.Connect(ns.ClientURL(), nats.UserInfo("u", "u"))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if err := u.PublishRequest("$JS.API.CONSUMER.MSG.NEXT.S.u", "$JS.API.STREAM.DELETE.S", []byte(`{"batch":"x"}`)); err != nil {
		t.Fatal(err)
	}
	u.Flush()
	eventually(t, 10*time.Second, "the stream deleted through the reply subject", func() bool {
		_, err := js.Stream(ctx, "S")
		return errors.Is(err, jetstream.ErrStreamNotFound)
	})
}

// TestHostileFlood: one key sends as fast as it can for 30 s (KEZ_LONG:
// 60 s), half to random tokens and half, 48 KiB at a time, to real users,
// against a kez-chat-server process with its default limits and a 256 MiB
// inbox stream. Every message the broker acknowledged for anyone else
// before the flood is still delivered, a message sent to a third user
// during the flood arrives promptly, and the flooder is told why it was
// refused: unknown recipient or quota, as typed errors of the SDK
// (issue 13, finding 2).
func TestHostileFlood(t *testing.T) {
	floodFor := 30 * time.Second
	if long() {
		floodFor = time.Minute
	}
	st := startProcStack(t, procOptions{Admin: true, NoHTTPLimits: true, ChatArgs: []string{"--inbox-max-bytes", fmt.Sprint(256 << 20)}})
	flooder, v1, v2, sender, third := st.register(t, "flooder"), st.register(t, "vic"), st.register(t, "tim"), st.register(t, "sam"), st.register(t, "thea")
	f, s := userLogin(t, st.NATSURL, flooder), userLogin(t, st.NATSURL, sender)
	ctx, cancel := context.WithTimeout(context.Background(), floodFor+2*time.Minute)
	defer cancel()

	// Mail the broker acknowledged for vic before the flood.
	for i := range 5 {
		if ans := s.send(v1.key, []byte(fmt.Sprintf("before the flood %d", i)), 10*time.Second); ans != "" {
			t.Fatalf("sam to vic: %s", ans)
		}
	}
	// The SDK's typed errors, through chat.Client: a key with a chain but
	// no handle is an unknown recipient.
	orphan := stacktest.Identity("chain-without-handle")
	link, err := sigchain.NewLink(orphan, nil, sigchain.TypeEldest, sigchain.EldestBody(orphan.PublicKey(), orphan.EncryptionKey(0).PublicKey(), 0, ""), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := (&sigchain.Client{BaseURL: st.SigURL}).Append(ctx, link); err != nil {
		t.Fatal(err)
	}
	fc, err := chat.Open(ctx, chat.Config{Client: kezclient.Config{Identity: flooder.id, Home: t.TempDir(), NATSURL: st.NATSURL, ServerURL: st.ChatURL,
		SigServerURL: st.SigURL, Domain: st.Domain, Logger: slog.New(slog.DiscardHandler)}})
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	if _, err := fc.SendKey(ctx, orphan.PublicKey(), "hello?"); !errors.Is(err, chat.ErrUnknownRecipient) {
		t.Fatalf("a send to a key without a handle: %v, want chat.ErrUnknownRecipient", err)
	}

	// The flood: 8 senders on the flooder's connection.
	type tally struct{ ok, unknown, senderQuota, other int }
	results := make(chan tally, 8)
	stop := time.Now().Add(floodFor)
	big := bytes.Repeat([]byte{'f'}, 48<<10)
	for w := range 8 {
		go func() {
			var tl tally
			for i := 0; time.Now().Before(stop); i++ {
				to := v1.key
				body := big
				switch {
				case i%2 == 0:
					var k kez.PublicKey
					rand.Read(k[:])
					to, body = k, []byte("who?")
				case (i/2+w)%2 == 0:
					to = v2.key
				}
				ans := f.send(to, body, 10*time.Second)
				switch {
				case ans == "":
					tl.ok++
				case strings.HasPrefix(ans, fmt.Sprint(callout.ErrCodeUnknownRecipient)):
					tl.unknown++
				case strings.HasPrefix(ans, fmt.Sprint(callout.ErrCodeSenderQuota)),
					strings.HasPrefix(ans, fmt.Sprint(callout.ErrCodeRecipientQuota)),
					strings.HasPrefix(ans, fmt.Sprint(callout.ErrCodeSenderUnread)):
					tl.senderQuota++
				default:
					tl.other++
				}
			}
			results <- tl
		}()
	}

	// During the flood: sam writes to thea, who is waiting for it.
	th := userLogin(t, st.NATSURL, third)
	if _, err := inbox.Open(ctx, th.nc, third.key.String(), 0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(floodFor / 3) // a scenario parameter: the flood is well under way
	sentAt := time.Now()
	if ans := s.send(third.key, []byte("during the flood"), 10*time.Second); ans != "" {
		t.Fatalf("sam to thea during the flood: %s", ans)
	}
	got, err := inbox.NewPuller(th.nc, third.key.String(), callout.DefaultStream).Fetch(ctx, 1, 10*time.Second)
	if err != nil || len(got) != 1 || string(got[0].Data()) != "during the flood" {
		t.Fatalf("thea during the flood: %d messages, %v", len(got), err)
	}
	arrived := time.Since(sentAt)
	got[0].Ack()
	// The SDK words the flooder's refusal: over its sending limit. (A send
	// may catch a token the bucket just refilled, so try a few.)
	refused := false
	for i := 0; i < 20 && !refused; i++ {
		_, err := fc.SendKey(ctx, v1.key, "one more")
		switch {
		case errors.Is(err, chat.ErrQuotaExceeded):
			refused = true
		case err != nil:
			t.Fatalf("the flooder's SDK send during the flood: %v, want chat.ErrQuotaExceeded", err)
		}
	}
	if !refused {
		t.Fatal("20 SDK sends during the flood all went through")
	}

	var sum tally
	for range 8 {
		r := <-results
		sum.ok, sum.unknown, sum.senderQuota, sum.other = sum.ok+r.ok, sum.unknown+r.unknown, sum.senderQuota+r.senderQuota, sum.other+r.other
	}

	// Vic still has every message sam's were acknowledged for.
	vc := userLogin(t, st.NATSURL, v1)
	if _, err := inbox.Open(ctx, vc.nc, v1.key.String(), 0); err != nil {
		t.Fatal(err)
	}
	fromSam := 0
	pl := inbox.NewPuller(vc.nc, v1.key.String(), callout.DefaultStream)
	for {
		msgs, err := pl.Fetch(ctx, 256, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) == 0 {
			break
		}
		for _, m := range msgs {
			if strings.HasSuffix(m.Subject(), "."+sender.key.String()) {
				fromSam++
			}
			m.Ack()
		}
	}
	info, err := st.AdminJetStream(t).Stream(ctx, callout.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("flood of %s: %d stored, %d refused as unknown recipients, %d over a quota, %d other; "+
		"sam's message to thea arrived in %s; vic got all %d of sam's earlier messages; stream holds %d bytes after vic read",
		floodFor, sum.ok, sum.unknown, sum.senderQuota, sum.other, arrived.Round(time.Millisecond), fromSam, info.CachedInfo().State.Bytes)
	if fromSam != 5 {
		t.Errorf("vic got %d of sam's 5 acknowledged messages", fromSam)
	}
	if arrived > 2*time.Second {
		t.Errorf("sam's message to thea took %s during the flood", arrived)
	}
	if sum.unknown == 0 || sum.senderQuota == 0 || sum.ok == 0 {
		t.Errorf("the flooder was not refused both ways (or stored nothing): %+v", sum)
	}
	if sum.other != 0 {
		t.Errorf("%d refusals of another kind", sum.other)
	}
}

// TestHostileStepdownInCluster: in a 3-node cluster, a user names the
// leader-stepdown APIs of the inbox stream, of another user's consumer and
// of the meta group as the reply subjects of everything she may publish;
// no leader moves (issue 13, finding 1: stepdown through a user).
func TestHostileStepdownInCluster(t *testing.T) {
	sys := startSystem(t, sysOptions{cluster: true})
	alice := sys.register(t, "alice")
	mallory := userLogin(t, sys.natsURL, sys.register(t, "mallory"))
	ctx := testCtx(t, 2*time.Minute)
	a := userLogin(t, sys.natsURL, alice)
	if _, err := inbox.Open(ctx, a.nc, alice.key.String(), 0); err != nil {
		t.Fatal(err)
	}
	keys, err := callout.LoadOrCreateKeys(sys.keysDir)
	if err != nil {
		t.Fatal(err)
	}
	gnc, err := nats.Connect(sys.natsURL, keys.ProvisionerOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer gnc.Close()
	js, _ := jetstream.New(gnc)
	leaders := func() string {
		st, err := js.Stream(ctx, callout.DefaultStream)
		if err != nil {
			t.Fatal(err)
		}
		c, err := js.Consumer(ctx, callout.DefaultStream, alice.key.String())
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("stream %s, alice's consumer %s, meta %s", st.CachedInfo().Cluster.Leader, c.CachedInfo().Cluster.Leader, sys.cluster.MetaLeader())
	}
	before := leaders()
	S, A, M := callout.DefaultStream, alice.key.String(), mallory.key.String()
	replies := []string{
		"$JS.API.STREAM.LEADER.STEPDOWN." + S,
		"$JS.API.CONSUMER.LEADER.STEPDOWN." + S + "." + A,
		"$JS.API.META.LEADER.STEPDOWN",
	}
	subjects := []string{
		callout.SendSubjectPrefix + A + "." + M, callout.ConsumerSubjectPrefix + M, callout.PullSubjectPrefix + M,
		callout.AckSubjectPrefix + M, callout.P2PSubjectPrefix + A, "_INBOX." + A + ".x",
	}
	for _, subj := range subjects {
		for _, reply := range replies {
			for _, body := range [][]byte{[]byte(`{"batch":1,"deliver":"t"}`), []byte(`{"batch":"x"}`), nil} {
				mallory.nc.PublishRequest(subj, reply, body)
			}
		}
	}
	// Everything mallory sent has been handled once the gate answers her.
	if ans := mallory.send(mallory.key, []byte("sync"), 20*time.Second); ans != "" {
		t.Fatalf("mallory's own send: %s", ans)
	}
	if after := leaders(); after != before {
		t.Fatalf("a leader moved: before %s, after %s", before, after)
	}
	t.Logf("%d publishes naming stepdown APIs as reply subjects: no leader moved (%s)", len(subjects)*len(replies)*3, before)
}
