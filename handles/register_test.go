package handles

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

func (s *stack) registerOptions() RegisterOptions {
	return RegisterOptions{ServerURL: s.chat.URL, SigServerURL: s.sig.URL}
}

// chainOf returns id's verified chain at the stack's sig-server, or nil if
// it has none.
func (s *stack) chainOf(t *testing.T, id *kez.Identity) *sigchain.State {
	t.Helper()
	st, err := s.sigc.FetchVerified(context.Background(), id.PublicKey(), nil)
	if errors.Is(err, sigchain.ErrNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestRegister(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, "kez.test")
	alice := newIdentity(t)
	h := Handle{Name: "alice", Domain: "kez.test"}

	r, err := Register(ctx, alice, h, s.registerOptions())
	if err != nil {
		t.Fatal(err)
	}
	if !r.Created || r.Record == nil || r.Record.Key != alice.PublicKey().String() || r.Handle != h ||
		r.Appended == nil || r.Appended.Type() != sigchain.TypeEldest || r.Chain.Handle() != h.String() || r.Chain.Seqno() != 1 {
		t.Fatalf("first registration: %+v", r)
	}
	if got := s.chainOf(t, alice); got.Head() != r.Chain.Head() {
		t.Errorf("the sig-server's chain is not the one Register returned")
	}

	// Again: nothing changes.
	r, err = Register(ctx, alice, h, s.registerOptions())
	if err != nil || r.Created || r.Appended != nil || r.Chain.Seqno() != 1 || r.Record.Key != alice.PublicKey().String() {
		t.Fatalf("second registration: %+v, %v", r, err)
	}

	// Anyone resolves her to her key.
	res, err := (&Resolver{DefaultDomain: "kez.test", HomeServer: s.chat.URL}).Resolve(ctx, "alice")
	if err != nil || res.Key != alice.PublicKey() {
		t.Fatalf("resolving a registered handle: %+v, %v", res, err)
	}
}

func TestRegisterRefusals(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, "kez.test")
	s.register(t, "bob")
	mallory := newIdentity(t)

	// The exact name of another key: refused before the chain is written.
	_, err := Register(ctx, mallory, Handle{Name: "bob", Domain: "kez.test"}, s.registerOptions())
	if !errors.Is(err, ErrTaken) {
		t.Fatalf("registering a taken name: %v", err)
	}
	if st := s.chainOf(t, mallory); st != nil {
		t.Fatalf("a refused name was written to the chain: %+v", st)
	}

	// A reserved name: refused before anything is sent.
	_, err = Register(ctx, mallory, Handle{Name: "admin", Domain: "kez.test"}, s.registerOptions())
	if ReasonOf(err) != ReasonReserved {
		t.Fatalf("registering a reserved name: %v", err)
	}

	// A look-alike is refused only by the claim, after the eldest link
	// named it: the chain gives the name up again.
	r, err := Register(ctx, mallory, Handle{Name: "b.o.b", Domain: "kez.test"}, s.registerOptions())
	if !errors.Is(err, ErrTaken) || r == nil || r.Appended == nil || r.Record != nil {
		t.Fatalf("registering a look-alike: %+v, %v", r, err)
	}
	if st := s.chainOf(t, mallory); st == nil || st.Seqno() != 2 || st.Handle() != "" || r.Chain.Head() != st.Head() {
		t.Fatalf("after a refused look-alike the chain must name no handle: %+v", st)
	}

	// On that chain another name is a set_handle link.
	r, err = Register(ctx, mallory, Handle{Name: "mallory", Domain: "kez.test"}, s.registerOptions())
	if err != nil || !r.Created || r.Appended.Type() != sigchain.TypeSetHandle || r.Chain.Seqno() != 3 || r.Chain.Handle() != "mallory@kez.test" {
		t.Fatalf("registering on a chain without a handle: %+v, %v", r, err)
	}

	// A key holds one handle: a chain naming another is left alone.
	r, err = Register(ctx, mallory, Handle{Name: "mal", Domain: "kez.test"}, s.registerOptions())
	if !errors.Is(err, ErrKeyHasHandle) || r.Appended != nil || s.chainOf(t, mallory).Seqno() != 3 {
		t.Fatalf("registering a second handle: %+v, %v", r, err)
	}
}

// TestRegisterConfusableLookAlikes: with bob, alice and mallory taken,
// Register refuses their look-alikes of issue 13 with a *TakenError
// naming the handle held, and the chain gives the name up again.
func TestRegisterConfusableLookAlikes(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, "kez.test")
	for _, n := range []string{"bob", "alice", "mallory"} {
		s.register(t, n)
	}
	for look, holder := range map[string]string{"b0b": "bob", "a1ice": "alice", "rnallory": "mallory", "8o8": "bob", "al.1ce": "alice"} {
		id := newIdentity(t)
		r, err := Register(ctx, id, Handle{Name: look, Domain: "kez.test"}, s.registerOptions())
		var te *TakenError
		if !errors.As(err, &te) || te.Holder != (Handle{Name: holder, Domain: "kez.test"}) || !te.LookAlike() {
			t.Errorf("registering %s: %v; want a *TakenError naming %s", look, err, holder)
			continue
		}
		if st := s.chainOf(t, id); st == nil || st.Handle() != "" || r.Record != nil {
			t.Errorf("after the refused %s the chain must name no handle: %+v", look, st)
		}
	}
	// Positive control: a name that is no one's look-alike registers.
	if _, err := Register(ctx, newIdentity(t), Handle{Name: "carol", Domain: "kez.test"}, s.registerOptions()); err != nil {
		t.Fatal(err)
	}
}

// When the claim is refused and giving the name up fails too, the error
// says the chain still names it.
func TestRegisterReleaseFails(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, "kez.test")
	s.register(t, "bob")
	var appends atomic.Int32
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && appends.Add(1) > 1 {
			http.Error(w, `{"error":"down for maintenance"}`, http.StatusServiceUnavailable)
			return
		}
		s.sig.Config.Handler.ServeHTTP(w, r)
	}))
	t.Cleanup(flaky.Close)
	o := s.registerOptions()
	o.SigServerURL = flaky.URL
	mallory := newIdentity(t)
	r, err := Register(ctx, mallory, Handle{Name: "b.o.b", Domain: "kez.test"}, o)
	if !errors.Is(err, ErrTaken) || !strings.Contains(err.Error(), "still names b.o.b@kez.test") || r.Chain.Handle() != "b.o.b@kez.test" {
		t.Fatalf("a failed release: %+v, %v", r, err)
	}
}
