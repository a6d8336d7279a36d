package chat

import (
	"fmt"
	"testing"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
)

// A blocked contact who moves his handle to a new key is still blocked:
// the new key's first message (a request until its handle is looked up)
// is deleted once the lookup names the blocked contact, and what it sends
// after is dropped as blocked, not stored as held messages (which no cap
// bounds) nor counted in the conversation list.
func TestBlockCoversAContactsNewKey(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	alice := openClient(t, st, au, checkEveryTime)
	mustAdd(t, alice, "bob")
	ctx := testCtx(t)
	if err := alice.Block(ctx, bu.Key); err != nil {
		t.Fatal(err)
	}

	// bob takes his name to a new key and writes from it.
	st.ReleaseHandle(t, "bob")
	id := stacktest.Identity("bob-new-key")
	registerAs(t, st, id, bu.Handle)
	nb := strangerAs(t, st, &stacktest.User{Name: "bob-new", Identity: id, Key: id.PublicKey(), Handle: bu.Handle}, "")
	nb.send(t, au, []byte("it is me, new key"))
	receiveUntil(t, alice, "the new key's first message", func(int) bool {
		s := alice.Stats()
		return s.Received+s.Blocked >= 1
	})
	if err := alice.ResolveRequests(ctx); err != nil {
		t.Fatal(err)
	}
	const flood = 5
	before := alice.Stats()
	for i := range flood {
		nb.send(t, au, fmt.Appendf(nil, "still me %d", i))
	}
	receiveUntil(t, alice, "the new key's flood", func(int) bool {
		s := alice.Stats()
		return s.Received+s.Blocked-before.Received-before.Blocked >= flood
	})
	if s := alice.Stats(); s.Blocked-before.Blocked != flood || s.Held != 0 {
		t.Errorf("the blocked contact's new key: %d dropped, %d held; want %d, 0", s.Blocked-before.Blocked, s.Held, flood)
	}
	if held, _ := alice.Held(ctx); len(held) != 0 {
		t.Errorf("held from the blocked contact's new key: %q", texts(held))
	}
	if reqs, _ := alice.Requests(ctx); len(reqs) != 0 {
		t.Errorf("requests from the blocked contact's new key: %q", texts(reqs))
	}
	cvs, err := alice.Conversations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, cv := range cvs {
		if cv.Held != 0 || cv.Unread != 0 || cv.Request {
			t.Errorf("conversation row: %+v", cv)
		}
	}
}
