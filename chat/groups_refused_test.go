package chat

import (
	"errors"
	"testing"

	"github.com/kez-lat/kez-chat/chatserver"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
)

// TestGroupSendEveryCopyRefused: when the gate refuses every copy of a
// group message (here: alice's bucket for each member is spent by the
// group-update that added them), SendGroup returns the error a
// one-to-one send to them would (a *QuotaError for the recipient limit)
// and the message is recorded as failed; it never reports a send that
// stored nothing as sent.
func TestGroupSendEveryCopyRefused(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{MailLimits: chatserver.MailLimits{RecipientRate: 0.001, RecipientBurst: 1}})
	alice := openClient(t, st, st.NewUser(t, "alice"))
	memberWithPrekey(t, st, "bob")
	memberWithPrekey(t, st, "carol")
	ctx := testCtx(t)
	if _, err := alice.CreateGroup(ctx, "team", ""); err != nil {
		t.Fatal(err)
	}
	if err := alice.AddGroupMembers(ctx, "team", "bob", "carol"); err != nil {
		t.Fatal(err)
	}
	sent, err := alice.SendGroup(ctx, "team", "nobody gets this")
	var qe *QuotaError
	if !errors.Is(err, ErrQuotaExceeded) || !errors.As(err, &qe) || qe.Limit != "recipient" {
		t.Fatalf("SendGroup: %v, want the recipient limit's QuotaError", err)
	}
	if sent != (Sent{}) {
		t.Errorf("SendGroup returned %+v with its error", sent)
	}
	if got := gateRefusals(t, st, "recipient_quota"); got != "4" {
		t.Errorf("%s refusals, want 4 (the key and the message, for bob and carol)", got)
	}
	es, err := alice.GroupHistory(ctx, "team", 0)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, e := range es {
		if e.Text() == "nobody gets this" {
			found = true
			if e.State != StateFailed {
				t.Errorf("the message is recorded as %q, want %q", e.State, StateFailed)
			}
		}
	}
	if !found {
		t.Fatal("the message is not in the group's history")
	}
}
