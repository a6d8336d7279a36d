package files_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
)

// Browsing an owner again fetches only their chain's new links (counted at
// a real sig-server), and still sees what they shared since.
func TestBrowseFetchesOnlyNewLinks(t *testing.T) {
	reqs := &stacktest.ChainFetches{}
	st := stacktest.Start(t, stacktest.Options{WrapSigServer: reqs.Wrap})
	alice, bob := newPeer(t, st, "alice"), newPeer(t, st, "bob")
	ctx := context.Background()
	fetches := func() []string { return reqs.Of(alice.user.Key) }
	share := func(name string) {
		t.Helper()
		p := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(p, []byte(name), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.Share(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	browse := func() []string {
		t.Helper()
		list, err := bob.Browse(ctx, alice.handle())
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range list {
			names = append(names, e.Name)
		}
		return names
	}

	share("a.txt") // alice's chain: eldest, manifest (seqno 2)
	fetches()
	if got := browse(); !slices.Equal(got, []string{"a.txt"}) {
		t.Fatalf("first browse: %q", got)
	}
	if got := fetches(); !slices.Equal(got, []string{"since=0"}) {
		t.Fatalf("the first browse fetched %q, want the whole chain once", got)
	}
	share("b.txt") // seqno 3
	fetches()
	if got := browse(); !slices.Equal(got, []string{"a.txt", "b.txt"}) {
		t.Fatalf("second browse: %q", got)
	}
	if got := fetches(); !slices.Equal(got, []string{"since=1"}) {
		t.Fatalf("the second browse fetched %q, want from the known head (seqno 2) on", got)
	}
}
