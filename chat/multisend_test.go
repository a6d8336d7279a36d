package chat

import (
	"errors"
	"fmt"
	"testing"

	"github.com/kez-lat/kez-chat/chatserver"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/kez"
)

// TestPublishMulti: publishMulti splits more than wire.MaxMultiRecipients
// devices over several requests and sums their answers; devices refused
// one by one map to the errors a send to each would return, and a
// refusal of the whole to the typed errors.
func TestPublishMulti(t *testing.T) {
	const strangers = wire.MaxMultiRecipients + 5
	st := stacktest.Start(t, stacktest.Options{MailLimits: chatserver.MailLimits{
		SenderCopyRate: 0.001, SenderCopyBurst: strangers + 2,
		// Each stranger (no handle) costs a message too (docs/spec/chat.md §1).
		SenderBurst: 2 * strangers,
	}})
	alice, bob := openClient(t, st, st.NewUser(t, "alice")), st.NewUser(t, "bob")
	devices := []kez.PublicKey{bob.Key}
	for i := range strangers {
		devices = append(devices, stacktest.Identity(fmt.Sprint("stranger", i)).PublicKey())
	}
	a, err := alice.publishMulti(testCtx(t), devices, []byte("payload"), "m1")
	if err != nil || a.Stored != 1 || len(a.Refused) != strangers {
		t.Fatalf("answer: stored %d, refused %d, %v", a.Stored, len(a.Refused), err)
	}
	for _, r := range a.Refused {
		if r.Device == bob.Key || !errors.Is(multiRefusalError(r), ErrUnknownRecipient) {
			t.Fatalf("refused %s: %v", r.Device, multiRefusalError(r))
		}
	}
	// Sent again: bob's copy is a duplicate.
	if a, err = alice.publishMulti(testCtx(t), devices[:1], []byte("payload"), "m1"); err != nil || a.Duplicates != 1 {
		t.Fatalf("again: %+v %v", a, err)
	}
	// The copy bucket is spent: the whole is refused as a QuotaError.
	_, err = alice.publishMulti(testCtx(t), devices[:2], []byte("payload"), "m2")
	var qe *QuotaError
	if !errors.As(err, &qe) || qe.Limit != "sender" || !errors.Is(err, ErrQuotaExceeded) {
		t.Fatalf("over the copy bucket: %v", err)
	}
	for code, want := range map[int]error{
		wire.ErrCodeRecipientQuota:   ErrQuotaExceeded,
		wire.ErrCodeSenderUnread:     ErrQuotaExceeded,
		wire.ErrCodeRecipientRevoked: errRecipientRevoked,
		wire.ErrCodeUnavailable:      errInboxUnavailable,
	} {
		if err := multiRefusalError(wire.MultiRefusal{Device: bob.Key, Code: code}); !errors.Is(err, want) {
			t.Errorf("code %d: %v", code, err)
		}
	}
}
