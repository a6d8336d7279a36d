package files_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
)

// ToKey encrypts to a handle only at the key given (a chat contact's
// pinned key): once bob's handle names another key, a share to bob at
// his old key is refused and nothing is shared; To alone would encrypt
// to whatever key the handle names now.
func TestShareToKeyRefusesAnotherKey(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	ctx := devCtx(t)
	alice := newPeer(t, st, "alice")
	bu := st.NewUser(t, "bob")

	path := writeFile(t, "plans.txt", testBytes(10<<10))
	sf, err := alice.Share(ctx, path, files.ToKey("bob", bu.Key))
	if err != nil {
		t.Fatal(err)
	}
	if !sf.Private || !slices.Contains(sf.Recipients, "bob@kez.test") {
		t.Fatalf("shared: %+v", sf)
	}

	st.ReleaseHandle(t, "bob")
	other := stacktest.Identity("not-bob")
	if _, err := handles.Register(ctx, other, bu.Handle, handles.RegisterOptions{ServerURL: st.ServerURL, SigServerURL: st.SigServerURL}); err != nil {
		t.Fatal(err)
	}
	second := writeFile(t, "more-plans.txt", testBytes(10<<10))
	_, err = alice.Share(ctx, second, files.ToKey("@bob", bu.Key))
	var rk *files.RecipientKeyError
	if !errors.As(err, &rk) || !errors.Is(err, files.ErrRecipientKey) || rk.Handle != "bob@kez.test" || rk.Want != bu.Key || rk.Current != other.PublicKey() {
		t.Fatalf("a share to bob's old key: %v", err)
	}
	shared, err := alice.Shared(ctx)
	if err != nil || len(shared) != 1 || shared[0].Name != "plans.txt" {
		t.Fatalf("shared after the refusal: %+v, %v", shared, err)
	}
}
