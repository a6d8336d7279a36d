package chat

import (
	"errors"
	"slices"
	"testing"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
)

// Accepting a request: the requester becomes a contact, its requests are
// trusted unread messages of the conversation, and its next message
// arrives trusted.
func TestAcceptRequest(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, cu := st.NewUser(t, "alice"), st.NewUser(t, "carol")
	alice := openClient(t, st, au)
	carol := openClient(t, st, cu)
	ctx := testCtx(t)
	if _, err := carol.SendKey(ctx, au.Key, "hi, it is carol"); err != nil {
		t.Fatal(err)
	}
	receiveN(t, alice, 1)

	ct, err := alice.AcceptRequest(ctx, cu.Key)
	if err != nil {
		t.Fatal(err)
	}
	if ct.Handle != cu.Handle.String() || ct.Key != cu.Key {
		t.Fatalf("contact: %+v", ct)
	}
	if reqs, _ := alice.Requests(ctx); len(reqs) != 0 {
		t.Errorf("requests after accepting: %d", len(reqs))
	}
	h, err := alice.History(ctx, "carol", 0)
	if err != nil || len(h) != 1 || h[0].Trust != TrustTrusted || h[0].Read || h[0].PeerHandle != cu.Handle.String() {
		t.Fatalf("carol's conversation: %+v, %v", h, err)
	}
	if u, _ := alice.Unread(ctx); len(u) != 1 {
		t.Errorf("unread: %d", len(u))
	}
	if _, err := alice.AcceptRequest(ctx, cu.Key); !errors.Is(err, ErrNotRequest) {
		t.Errorf("accepting twice: %v", err)
	}

	// carol's next message is trusted; alice can answer.
	if _, err := carol.SendKey(ctx, au.Key, "thanks"); err != nil {
		t.Fatal(err)
	}
	receiveN(t, alice, 1)
	if h, _ := alice.History(ctx, "carol", 0); len(h) != 2 || h[1].Trust != TrustTrusted {
		t.Errorf("carol's next message: %+v", h)
	}
	mustSend(t, alice, "carol", "welcome")
}

// Each error of AcceptRequest changes nothing.
func TestAcceptRequestErrors(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	alice := openClient(t, st, au, checkEveryTime)
	mustAdd(t, alice, "bob")
	ctx := testCtx(t)

	// No request at all, and a contact's key.
	if _, err := alice.AcceptRequest(ctx, stacktest.Identity("nobody").PublicKey()); !errors.Is(err, ErrNotRequest) {
		t.Errorf("a key that sent nothing: %v", err)
	}
	if _, err := alice.AcceptRequest(ctx, bu.Key); !errors.Is(err, ErrNotRequest) {
		t.Errorf("a contact: %v", err)
	}

	// mallory's chain claims bob's handle, which the registry does not
	// confirm for her key: there is no handle to add.
	mallory := newStrangerUser(t, st, "mallory", bu.Handle.String())
	mallory.send(t, au, []byte("it is me, bob"))
	receiveN(t, alice, 1)
	if _, err := alice.AcceptRequest(ctx, mallory.u.Key); !errors.Is(err, ErrUnconfirmed) {
		t.Errorf("an unconfirmed claim: %v", err)
	}
	if ct, _ := alice.Contact(ctx, "bob"); ct.Key != bu.Key || ct.Flag != FlagNone {
		t.Errorf("bob after mallory's request was refused: %+v", ct)
	}

	// dave's handle was confirmed when his request came, then the
	// operator gave the name to another key: accepting is refused and
	// nothing is pinned.
	du := st.NewUser(t, "dave")
	dave := strangerAs(t, st, du, "")
	dave.send(t, au, []byte("hello from dave"))
	receiveN(t, alice, 1)
	if err := alice.ResolveRequests(ctx); err != nil {
		t.Fatal(err)
	}
	st.ReleaseHandle(t, "dave")
	registerAs(t, st, stacktest.Identity("not-dave"), du.Handle)
	_, err := alice.AcceptRequest(ctx, du.Key)
	var mm *RequestMismatchError
	if !errors.As(err, &mm) || !errors.Is(err, ErrKeyChanged) || mm.Requester != du.Key || mm.Current != stacktest.Identity("not-dave").PublicKey() {
		t.Fatalf("a handle that names another key now: %v", err)
	}
	if _, err := alice.Contact(ctx, "dave"); !errors.Is(err, ErrNotContact) {
		t.Errorf("dave was pinned: %v", err)
	}
	reqs, _ := alice.Requests(ctx)
	var from []kez.PublicKey
	for _, r := range reqs {
		from = append(from, r.From)
	}
	if !slices.Contains(from, du.Key) || !slices.Contains(from, mallory.u.Key) || len(reqs) != 2 {
		t.Errorf("requests after the refusals: %+v", reqs)
	}
}

// AcceptKey pins the key whose safety number was shown, never another:
// bob's handle moves to a second key (alice's client flags him and shows
// its number), then to a third before alice accepts; accepting the second
// is refused and changes nothing, accepting the key the handle names pins
// it.
func TestAcceptKey(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	alice := openClient(t, st, au, checkEveryTime)
	mustAdd(t, alice, "bob")
	ctx := testCtx(t)

	st.ReleaseHandle(t, "bob")
	second := stacktest.Identity("bob-second")
	registerAs(t, st, second, bu.Handle)
	if _, err := alice.CheckContact(ctx, "bob"); !errors.Is(err, ErrKeyChanged) {
		t.Fatalf("checking bob after the change: %v", err)
	}
	shown, _ := alice.Contact(ctx, "bob")
	if shown.FlagKey != second.PublicKey() {
		t.Fatalf("the flag names %s, not the second key", shown.FlagKey)
	}

	// Between the banner and the accept, the handle moves again.
	st.ReleaseHandle(t, "bob")
	third := stacktest.Identity("bob-third")
	registerAs(t, st, third, bu.Handle)
	_, err := alice.AcceptKey(ctx, "bob", shown.FlagKey)
	var mm *RequestMismatchError
	if !errors.As(err, &mm) || !errors.Is(err, ErrKeyChanged) || mm.Handle != "bob@kez.test" || mm.Requester != second.PublicKey() || mm.Current != third.PublicKey() {
		t.Fatalf("accepting a key the handle no longer names: %v", err)
	}
	if ct, _ := alice.Contact(ctx, "bob"); ct.Key != bu.Key || ct.Flag != FlagKeyChanged || ct.FlagKey != second.PublicKey() {
		t.Errorf("bob after the refused accept: %+v", ct)
	}
	if got := events(t, alice, "bob"); !slices.Equal(got, []string{"added", "flagged_key_changed"}) {
		t.Errorf("events after the refused accept: %q", got)
	}
	if _, err := alice.Send(ctx, "bob", "to nobody"); !errors.Is(err, ErrKeyChanged) {
		t.Errorf("sending after the refused accept: %v", err)
	}

	// The key the handle names now, accepted, is pinned.
	ct, err := alice.AcceptKey(ctx, "@bob", third.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if ct.Key != third.PublicKey() || ct.Flag != FlagNone || ct.Handle != "bob@kez.test" {
		t.Errorf("accepted: %+v", ct)
	}
	if got := events(t, alice, "bob"); !slices.Equal(got, []string{"added", "flagged_key_changed", "accepted_new_key"}) {
		t.Errorf("events: %q", got)
	}
	tb := openClient(t, st, &stacktest.User{Name: "bob-third", Identity: third, Key: third.PublicKey(), Handle: bu.Handle})
	mustSend(t, alice, "bob", "hello, third bob")
	receiveN(t, tb, 1)
	if reqs, err := tb.Requests(ctx); err != nil || len(reqs) != 1 || reqs[0].Text() != "hello, third bob" {
		t.Errorf("the third key received %+v, %v", reqs, err)
	}
}
