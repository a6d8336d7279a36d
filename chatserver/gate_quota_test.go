package chatserver_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/chatserver"
	"github.com/kez-lat/kez-chat/internal/inbox"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
)

// TestGateSenderQuota: past its burst a sender is refused with the quota
// code; another sender to the same recipient is not.
func TestGateSenderQuota(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{MailLimits: chatserver.MailLimits{SenderRate: 0.001, SenderBurst: 3}})
	mallory, bob, carol := gateLogin(t, st, "mallory"), gateLogin(t, st, "bob"), gateLogin(t, st, "carol")
	for i := range 3 {
		if code, _ := gateCode(t, mallory.send(t, bob.key, []byte("x"))); code != 0 {
			t.Fatalf("send %d refused: %d", i, code)
		}
	}
	if code, _ := gateCode(t, mallory.send(t, bob.key, []byte("x"))); code != callout.ErrCodeSenderQuota {
		t.Fatalf("4th send: code %d", code)
	}
	// Refused sends count too: unknown recipients do not escape the quota.
	if code, _ := gateCode(t, mallory.send(t, stacktest.Identity("nobody").PublicKey(), []byte("x"))); code != callout.ErrCodeSenderQuota {
		t.Fatalf("send to a stranger over quota: code %d", code)
	}
	if code, _ := gateCode(t, carol.send(t, bob.key, []byte("x"))); code != 0 {
		t.Fatalf("carol refused: %d", code)
	}
	body := fetch(t, st.ServerURL+"/metrics")
	for _, want := range []string{
		`kez_chat_gate_refusals_total{reason="sender_quota"} 2`,
		`kez_chat_gate_limit{name="sender_burst"} 3`,
		`kez_chat_gate_requests_total{kind="send",result="forwarded"} 4`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestGateRecipientQuota: one sender is held to its rate for one
// recipient; flooding bob does not use up what others may send him
// (each sender has its own bucket per recipient), nor the flooder's
// allowance for others.
func TestGateRecipientQuota(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{MailLimits: chatserver.MailLimits{RecipientRate: 0.001, RecipientBurst: 2}})
	a, b, bob, dave := gateLogin(t, st, "anna"), gateLogin(t, st, "bert"), gateLogin(t, st, "bob"), gateLogin(t, st, "dave")
	for range 2 {
		if code, _ := gateCode(t, a.send(t, bob.key, []byte("x"))); code != 0 {
			t.Fatalf("refused: %d", code)
		}
	}
	if code, _ := gateCode(t, a.send(t, bob.key, []byte("x"))); code != callout.ErrCodeRecipientQuota {
		t.Fatalf("anna's 3rd message to bob: code %d", code)
	}
	if code, _ := gateCode(t, b.send(t, bob.key, []byte("x"))); code != 0 {
		t.Fatalf("bert's message to bob after anna's flood: code %d", code)
	}
	if code, _ := gateCode(t, a.send(t, dave.key, []byte("x"))); code != 0 {
		t.Fatalf("anna's message to dave: code %d", code)
	}
}

// TestGateUnreadCapPerSender: one sender leaves at most
// MaxMsgsPerSubject unread messages in one inbox; the stream refuses more
// to that sender only, and evicts nothing.
func TestGateUnreadCapPerSender(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{Inbox: callout.InboxConfig{MaxMsgsPerSubject: 2}})
	mallory, carol, bob := gateLogin(t, st, "mallory"), gateLogin(t, st, "carol"), gateLogin(t, st, "bob")
	if code, _ := gateCode(t, carol.send(t, bob.key, []byte("carol's"))); code != 0 {
		t.Fatal("carol refused")
	}
	for range 2 {
		if code, _ := gateCode(t, mallory.send(t, bob.key, []byte("x"))); code != 0 {
			t.Fatal("mallory refused early")
		}
	}
	code, desc := gateCode(t, mallory.send(t, bob.key, []byte("x")))
	if code == 0 || !strings.Contains(desc, "maximum messages per subject") {
		t.Fatalf("3rd unread message: %d %q", code, desc)
	}
	if code, _ := gateCode(t, carol.send(t, bob.key, []byte("carol's second"))); code != 0 {
		t.Fatal("carol refused after mallory's flood")
	}
	deadline := time.Now().Add(10 * time.Second) // the consumer's count follows the stream shortly
	for info := st.ConsumerInfo(t, bob.key); info.NumPending != 4; info = st.ConsumerInfo(t, bob.key) {
		if time.Now().After(deadline) {
			t.Fatalf("bob has %d waiting, want 4", info.NumPending)
		}
	}
}

// TestGateSenderUnreadCap: one sender has at most SenderUnread messages
// waiting in all inboxes together; once recipients read (and the gate
// removed what they read), it may send again.
func TestGateSenderUnreadCap(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{MailLimits: chatserver.MailLimits{SenderUnread: 5, SenderRate: -1, RecipientRate: -1, RemoveReadAfter: 1}})
	mallory, bob, carol := gateLogin(t, st, "mallory"), gateLogin(t, st, "bob"), gateLogin(t, st, "carol")
	for i := range 5 {
		to := bob.key
		if i%2 == 1 {
			to = carol.key
		}
		if code, _ := gateCode(t, mallory.send(t, to, []byte("x"))); code != 0 {
			t.Fatalf("message %d refused: %d", i, code)
		}
	}
	if code, _ := gateCode(t, mallory.send(t, carol.key, []byte("x"))); code != callout.ErrCodeSenderUnread {
		t.Fatalf("the 6th unread message: code %d", code)
	}
	// Others still send; bob reads his three.
	if code, _ := gateCode(t, carol.send(t, bob.key, []byte("carol's"))); code != 0 {
		t.Fatal("carol refused")
	}
	ctx := context.Background()
	msgs, err := inbox.NewPuller(bob.nc, bob.key.String(), callout.DefaultStream).Fetch(ctx, 10, 0)
	if err != nil || len(msgs) != 4 {
		t.Fatalf("bob: %d, %v", len(msgs), err)
	}
	for _, m := range msgs {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// The gate counts again at most once a second while over the cap.
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, _ := gateCode(t, mallory.send(t, carol.key, []byte("after bob read")))
		if code == 0 {
			break
		}
		if code != callout.ErrCodeSenderUnread || time.Now().After(deadline) {
			t.Fatalf("after bob read: code %d", code)
		}
	}
	if !strings.Contains(fetch(t, st.ServerURL+"/metrics"), `kez_chat_gate_refusals_total{reason="sender_unread"}`) {
		t.Error("no metric for the refusals")
	}
}

// TestStreamKeepsUnreadMailOnly: a full stream refuses new mail instead
// of evicting stored mail, and a message goes once its recipient
// acknowledged it (the gate removes read mail), which makes room again.
func TestStreamKeepsUnreadMailOnly(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{Inbox: callout.InboxConfig{MaxBytes: 16 << 10}, MailLimits: noLimitsRemovingRead})
	mallory, bob := gateLogin(t, st, "mallory"), gateLogin(t, st, "bob")
	first := append([]byte("first"), bytes.Repeat([]byte{'x'}, 1024)...)
	if code, _ := gateCode(t, bob.send(t, bob.key, first)); code != 0 {
		t.Fatal("refused")
	}
	var desc string
	for i := 0; i < 100 && desc == ""; i++ {
		_, desc = gateCode(t, mallory.send(t, bob.key, bytes.Repeat([]byte{'x'}, 1024)))
	}
	if !strings.Contains(desc, "maximum bytes") {
		t.Fatalf("a full stream answered %q", desc)
	}
	ctx := context.Background()
	msgs, err := inbox.NewPuller(bob.nc, bob.key.String(), callout.DefaultStream).Fetch(ctx, 1, 0)
	if err != nil || len(msgs) != 1 || !bytes.Equal(msgs[0].Data(), first) {
		t.Fatalf("the first message was evicted: %d, %v", len(msgs), err)
	}
	if err := msgs[0].Ack(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, _ := gateCode(t, mallory.send(t, bob.key, bytes.Repeat([]byte{'y'}, 1024)))
		if code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no room after bob's acknowledgement: %d", code)
		}
	}
}

// noLimitsRemovingRead turns the gate's limits off and removes read mail
// at once.
var noLimitsRemovingRead = func() chatserver.MailLimits {
	l := chatserver.NoMailLimits
	l.RemoveReadAfter = 1
	return l
}()
