package files_test

import (
	"context"
	"testing"

	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
)

// Config.Answers reaches the serving device's signalling: with a budget
// of one answer, bob's second locate gets a cookie first and is still
// answered, and Stats counts both (docs/spec/signalling.md §7).
func TestServeAnswerBudget(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	alice := openWith(t, st, au, client.Config{Identity: au.Identity, Home: au.Home}, func(c *files.Config) {
		c.Answers = files.AnswerLimits{Rate: 0.001, Burst: 1}
	})
	bob := openPeer(t, st, bu)
	ctx := context.Background()
	if err := alice.StartServing(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if _, err := bob.Locate(ctx, alice.handle(), files.LocateOptions{}); err != nil {
			t.Fatalf("locate %d: %v", i+1, err)
		}
	}
	if got, want := alice.Stats().Signalling, (files.SignallingStats{Answered: 2, Cookied: 1}); got != want {
		t.Fatalf("signalling stats %+v, want %+v", got, want)
	}
}
