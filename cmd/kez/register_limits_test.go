package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/sigchain"
)

// TestRegisterRateLimited registers on a stack with the servers' default
// limits until both refuse more from this address: "kez register" says
// how long to wait, and, when the sigchain already names the handle,
// that registering again then finishes it.
func TestRegisterRateLimited(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{Limits: true})
	lateHome, late := newHome(t)
	l, err := sigchain.NewLink(late, nil, sigchain.TypeEldest, sigchain.EldestBody(late.PublicKey(), late.EncryptionKey(0).PublicKey(), 0, "late@"+st.Domain), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := (&sigchain.Client{BaseURL: st.SigServerURL}).Append(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	for i := range 9 { // chains 2 to 10 of this address, claims 1 to 9
		st.NewUser(t, fmt.Sprintf("user%d", i))
	}
	st.NewUser(t, "user0") // claim 10: a renewal

	r := kezCmd(t, with(st.Env(nil), "KEZ_HOME", lateHome), "", "register", "late")
	want := `the server refused: too many requests from your address or key; your sigchain already names @late@kez.test, so running "kez register late" again in 6 minutes finishes the registration`
	if r.code != 1 || !strings.Contains(r.stderr, want) {
		t.Errorf("a refused claim: exit %d\n%s\nwant %q", r.code, r.stderr, want)
	}
	home, _ := newHome(t)
	r = kezCmd(t, with(st.Env(nil), "KEZ_HOME", home), "", "register", "newbie")
	want = "the server refused: too many requests from your address or key; try again in 6 minutes"
	if r.code != 1 || !strings.Contains(r.stderr, want) {
		t.Errorf("a refused chain: exit %d\n%s\nwant %q", r.code, r.stderr, want)
	}
}

func TestWaitWords(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "1 second", time.Second: "1 second", 1500 * time.Millisecond: "2 seconds", 59 * time.Second: "59 seconds",
		time.Minute: "1 minute", 6 * time.Minute: "6 minutes", 59*time.Minute + 1: "60 minutes",
		time.Hour: "about 1 hour", 150 * time.Minute: "about 3 hours",
	} {
		if got := waitWords(d); got != want {
			t.Errorf("waitWords(%v) = %q, want %q", d, got, want)
		}
	}
}
