package systemtest

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/internal/inbox"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestPermissionMatrix: mallory, a registered user logged in through the
// callout, tries every subject and JetStream API that could reach another
// user's data (alice's inbox, consumer, replies, signalling) or the
// servers' stores. The broker refuses each one with a permissions
// violation, one row per attempt; alice's message waiting in the stream
// is still hers, once, afterwards. The deployment keeps the registry and
// the chains in JetStream, so their streams exist to be tried.
func TestPermissionMatrix(t *testing.T) {
	sys := startSystem(t, sysOptions{jetstream: true})
	alice, bob := sys.open(t, sys.register(t, "alice"), ""), sys.open(t, sys.register(t, "bob"), "")
	mallory := sys.register(t, "mallory")
	befriend(t, alice, bob)
	ctx := testCtx(t, 60*time.Second)
	sent, err := bob.Send(ctx, "alice@"+domain, "for alice only")
	if err != nil {
		t.Fatal(err)
	}

	errs := make(chan error, 256)
	nc, err := chat.Connect(ctx, sys.natsURL, mallory.id,
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)

	A, B, M := alice.u.key.String(), bob.u.key.String(), mallory.key.String()
	S := callout.DefaultStream
	subs := []string{
		"kez.v1.inbox." + A + ".>",      // alice's incoming messages, live
		"kez.v1.inbox." + A + "." + B,   // from one sender
		"kez.v1.inbox.*." + A,           // alice's outgoing messages
		"kez.v1.inbox.>",                // everyone's
		">",                             // everything
		"_INBOX." + A + ".>",            // alice's replies
		"_INBOX.>",                      // everyone's replies
		"kez.v1.p2p." + A,               // alice's file signalling
		"kez.v1.p2p.*",                  // everyone's
		"$JS.ACK." + S + "." + A + ".>", // alice's acknowledgements
		"kez.v1.deliver." + A + ".>",    // what alice's pulls deliver
		"kez.v1.deliver.>",              // what everyone's deliver
		"kez.v1.send.>",                 // everyone's sends
		"kez.v1.msend.>",                // everyone's multi-recipient sends
		"kez.v1.ack.>",                  // the gate's side of acknowledgements
		"$JS.API.>",                     // JetStream API traffic
		"$JS.EVENT.>",                   // JetStream advisories
		"$KV.KEZ_HANDLES.>",             // the registry's writes
		"kez.v1.chain.>",                // the sigchain stream's writes
		"$SYS.>",                        // system events
	}
	pubs := []string{
		"kez.v1.inbox." + B + "." + A, // store as alice, past the gate
		"kez.v1.inbox." + A + "." + M, // store as herself, past the gate
		"kez.v1.send." + B + "." + A,  // send as alice
		"kez.v1.msend." + A,           // send to many as alice
		"kez.v1.pull." + A,            // pull alice's consumer through the gate
		"kez.v1.consumer." + A,        // remake alice's consumer through the gate
		"kez.v1.ack." + A,             // acknowledge as alice through the gate
		"kez.v1.inbox." + A + "." + A,
		"$JS.API.CONSUMER.CREATE." + S + "." + A + ".kez.v1.inbox." + A + ".>", // replace alice's consumer
		"$JS.API.CONSUMER.CREATE." + S + "." + M + ".kez.v1.inbox." + A + ".>", // own name, alice's filter
		"$JS.API.CONSUMER.CREATE." + S + "." + M + ".kez.v1.inbox.>",           // own name, everyone's filter
		"$JS.API.CONSUMER.CREATE." + S + "." + A,
		"$JS.API.CONSUMER.CREATE." + S,
		"$JS.API.CONSUMER.DURABLE.CREATE." + S + "." + A,
		"$JS.API.CONSUMER.INFO." + S + "." + A,
		"$JS.API.CONSUMER.MSG.NEXT." + S + "." + A, // pull alice's messages
		"$JS.API.CONSUMER.DELETE." + S + "." + A,
		"$JS.API.CONSUMER.PAUSE." + S + "." + A,
		"$JS.API.CONSUMER.UNPIN." + S + "." + A,
		"$JS.API.CONSUMER.LIST." + S,
		"$JS.API.CONSUMER.NAMES." + S,
		"$JS.ACK." + S + "." + A + ".1.1.1.1.0", // acknowledge alice's delivery
		"$JS.API.DIRECT.GET." + S,
		"$JS.API.DIRECT.GET." + S + ".kez.v1.inbox." + A + "." + B,
		"$JS.API.STREAM.MSG.GET." + S,
		"$JS.API.STREAM.MSG.DELETE." + S,
		"$JS.API.STREAM.INFO." + S,
		"$JS.API.STREAM.UPDATE." + S,
		"$JS.API.STREAM.DELETE." + S,
		"$JS.API.STREAM.PURGE." + S,
		"$JS.API.STREAM.SNAPSHOT." + S,
		"$JS.API.STREAM.CREATE.SPY",
		"$JS.API.STREAM.LIST",
		"$JS.API.STREAM.NAMES",
		"$JS.API.INFO",
		"$JS.API.STREAM.INFO.KV_KEZ_HANDLES",
		"$JS.API.DIRECT.GET.KV_KEZ_HANDLES.$KV.KEZ_HANDLES.key." + A,
		"$KV.KEZ_HANDLES.key." + A, // overwrite alice's registry entry
		"$JS.API.STREAM.MSG.GET.KEZ_SIGCHAINS",
		"kez.v1.chain." + A + ".2", // slip a link into alice's chain
		callout.AuthSubject,        // answer or spoof logins
		"$SYS.REQ.SERVER.PING",
		"$SYS.REQ.ACCOUNT.CHAT.CONNZ",
	}

	// waitViolation waits for the broker's permissions violation about subject.
	waitViolation := func(kind, subject string) error {
		want := fmt.Sprintf("permissions violation for %s to %q", kind, subject)
		timeout := time.After(5 * time.Second)
		for {
			select {
			case err := <-errs:
				if strings.Contains(strings.ToLower(err.Error()), strings.ToLower(want)) {
					return nil
				}
			case <-timeout:
				return errors.New("no permissions violation")
			}
		}
	}
	denied := 0
	for _, subj := range subs {
		if _, err := nc.SubscribeSync(subj); err != nil {
			t.Fatalf("subscribe %s: %v", subj, err)
		}
		nc.Flush()
		if err := waitViolation("subscription", subj); err != nil {
			t.Errorf("subscribe %s: %v", subj, err)
			continue
		}
		denied++
	}
	for _, subj := range pubs {
		if err := nc.PublishMsg(&nats.Msg{Subject: subj, Reply: "_INBOX." + M + ".x", Data: []byte("{}")}); err != nil {
			t.Fatalf("publish %s: %v", subj, err)
		}
		nc.Flush()
		if err := waitViolation("publish", subj); err != nil {
			t.Errorf("publish %s: %v", subj, err)
			continue
		}
		denied++
	}
	t.Logf("permission matrix: %d attempts (%d subscribe, %d publish), %d denied by the broker", len(subs)+len(pubs), len(subs), len(pubs), denied)

	// Controls: what is mallory's own still works on the same connection,
	// through the chat-server's gate.
	js, _ := jetstream.New(nc)
	if _, err := js.Publish(ctx, "kez.v1.send."+B+"."+M, []byte("x")); err != nil {
		t.Errorf("mallory's own send: %v", err)
	}
	if _, err := inbox.Open(ctx, nc, M, 0); err != nil {
		t.Errorf("mallory's own consumer: %v", err)
	}

	// Alice's message is still hers, exactly once.
	n, err := alice.Sync(ctx)
	if err != nil || n != 1 {
		t.Fatalf("alice after the matrix: %d messages, %v", n, err)
	}
	if m, err := alice.Message(ctx, bob.u.key, sent.ID); err != nil || m.Text() != "for alice only" {
		t.Fatalf("alice's message: %v %v", m, err)
	}
}
