package chat

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// checkEveryTime makes a client check contacts on every send and receive.
func checkEveryTime(c *Config) { c.RefreshInterval = -1 }

func events(t *testing.T, c *testClient, handle string) []string {
	t.Helper()
	evs, err := c.ContactEvents(testCtx(t), handle)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range evs {
		out = append(out, e.Event)
	}
	return out
}

// registerAs makes a new identity claim handle at the stack (after the
// operator released it): eldest link on the sig-server, then the claim.
func registerAs(t *testing.T, st *stacktest.Stack, id *kez.Identity, handle handles.Handle) {
	t.Helper()
	ctx := testCtx(t)
	if _, err := handles.Register(ctx, id, handle, handles.RegisterOptions{ServerURL: st.ServerURL, SigServerURL: st.SigServerURL}); err != nil {
		t.Fatal(err)
	}
}

func TestAddListVerifyContact(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	alice := openClient(t, st, au, func(c *Config) { c.Client.NATSURL = "" }) // contacts need no NATS
	ctx := testCtx(t)

	ct := mustAdd(t, alice, "@bob@kez.test")
	if ct.Handle != "bob@kez.test" || ct.Key != bu.Key || ct.Generation != 0 || ct.Pin != bu.Chain.Pin() || ct.Verified() || ct.Flag != FlagNone {
		t.Fatalf("contact: %+v", ct)
	}
	if !ct.EncryptionKey.Equal(bu.Identity.EncryptionKey(0).PublicKey()) {
		t.Error("the pinned encryption key is not bob's")
	}
	if _, err := alice.VerifyContact(ctx, "bob", "00000 00000 00000 00000 00000 00000"); !errors.Is(err, ErrFingerprintMismatch) {
		t.Errorf("wrong fingerprint: %v", err)
	}
	if c, _ := alice.Contact(ctx, "bob"); c.Verified() {
		t.Error("a wrong fingerprint verified the contact")
	}
	// Near misses are refused, and the refusal never shows the digits it
	// wanted, so they cannot be copied from it.
	fp := strings.ReplaceAll(bu.Key.Fingerprint(), " ", "-")
	sn := kez.SafetyNumber(au.Key, bu.Key)
	carol := stacktest.Identity("carol").PublicKey()
	for name, digits := range map[string]string{
		"alice's own fingerprint":         au.Key.Fingerprint(),
		"bob's fingerprint, one digit on": bu.Key.Fingerprint() + "0",
		"bob's fingerprint twice":         bu.Key.Fingerprint() + bu.Key.Fingerprint(),
		"the number of carol and bob":     kez.SafetyNumber(carol, bu.Key),
		"the number of alice and carol":   kez.SafetyNumber(au.Key, carol),
		"the number, a digit short":       sn[:len(sn)-1],
		"the number and the fingerprint":  sn + " " + bu.Key.Fingerprint(),
		"nothing":                         "",
		"no digits":                       "bob's fingerprint",
	} {
		_, err := alice.VerifyContact(ctx, "bob", digits)
		if !errors.Is(err, ErrFingerprintMismatch) {
			t.Errorf("%s: %v", name, err)
			continue
		}
		for _, secret := range []string{bu.Key.Fingerprint(), sn, onlyDigits(sn), onlyDigits(bu.Key.Fingerprint())} {
			if strings.Contains(err.Error(), secret) || strings.Contains(onlyDigits(err.Error()), onlyDigits(secret)) {
				t.Errorf("%s: the error shows the expected digits: %v", name, err)
			}
		}
	}
	if c, _ := alice.Contact(ctx, "bob"); c.Verified() {
		t.Error("a near miss verified the contact")
	}
	// The safety number bob reads out (his side computes it with the keys
	// swapped), laid out in rows, verifies.
	onBobsSide := kez.SafetyNumber(bu.Key, au.Key)
	if v, err := alice.VerifyContact(ctx, "bob", strings.Replace(onBobsSide, " ", "\n", 3)); err != nil || !v.Verified() {
		t.Fatalf("verify with the safety number: %+v, %v", v, err)
	}
	if v, err := alice.VerifyContact(ctx, "bob", fp); err != nil || !v.Verified() {
		t.Fatalf("verify: %+v, %v", v, err)
	}
	if _, err := alice.VerifyContact(ctx, "carol", fp); !errors.Is(err, ErrNotContact) {
		t.Errorf("verify a stranger: %v", err)
	}
	if _, err := alice.AddContact(ctx, "nobody"); !errors.Is(err, handles.ErrNotFound) {
		t.Errorf("add an unknown handle: %v", err)
	}
	if _, err := alice.Send(ctx, "bob", "hi"); !errors.Is(err, ErrOffline) {
		t.Errorf("send without NATS: %v", err)
	}

	// The pin survives reopening, verified mark included; re-adding an
	// unchanged contact keeps it verified.
	home := alice.cc.Home
	alice.Close()
	again := openClientIn(t, st, au, home, func(c *Config) { c.Client.NATSURL = "" })
	list, err := again.Contacts(ctx)
	if err != nil || len(list) != 1 || list[0].Handle != "bob@kez.test" || !list[0].Verified() || list[0].Pin != ct.Pin {
		t.Fatalf("contacts after reopening: %+v, %v", list, err)
	}
	if re := mustAdd(t, again, "bob"); !re.Verified() {
		t.Error("re-adding an unchanged contact dropped the verified mark")
	}
	if got := events(t, again, "bob"); !slices.Equal(got, []string{"added", "verified", "verified", "refreshed"}) {
		t.Errorf("events: %q", got)
	}
}

// The handle moves to another key: the contact is flagged loudly, sending
// is refused (also after a restart), the new key's messages are held, and
// re-adding the contact accepts the new key and releases them.
func TestKeyChangeIsFlagged(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	alice := openClient(t, st, au, checkEveryTime)
	mustAdd(t, alice, "bob")
	if _, err := alice.VerifyContact(testCtx(t), "bob", bu.Key.Fingerprint()); err != nil {
		t.Fatal(err)
	}
	mustSend(t, alice, "bob", "before")

	// The operator releases bob; another key claims the name.
	st.ReleaseHandle(t, "bob")
	imposter := stacktest.Identity("not-bob")
	registerAs(t, st, imposter, bu.Handle)

	ctx := testCtx(t)
	_, err := alice.Send(ctx, "bob", "after")
	var kc *KeyChangedError
	if !errors.As(err, &kc) || !errors.Is(err, ErrKeyChanged) {
		t.Fatalf("send after the key changed: %v", err)
	}
	if kc.Pinned != bu.Key || kc.Current != imposter.PublicKey() || !strings.Contains(err.Error(), "WARNING") || !strings.Contains(err.Error(), imposter.PublicKey().Fingerprint()) {
		t.Errorf("key change error: %+v\n%v", kc, err)
	}
	ct, _ := alice.Contact(ctx, "bob")
	if ct.Flag != FlagKeyChanged || ct.FlagKey != imposter.PublicKey() || ct.Key != bu.Key {
		t.Errorf("flagged contact: %+v", ct)
	}
	if _, err := alice.VerifyContact(ctx, "bob", bu.Key.Fingerprint()); !errors.Is(err, ErrKeyChanged) {
		t.Errorf("verifying a flagged contact: %v", err)
	}

	// The new key writes to alice: held, not shown.
	im := openClient(t, st, &stacktest.User{Name: "not-bob", Identity: imposter, Key: imposter.PublicKey(), Handle: bu.Handle})
	if _, err := im.SendKey(ctx, au.Key, "it is me, bob, new phone"); err != nil {
		t.Fatal(err)
	}
	receiveN(t, alice, 1)
	if in := mustInbox(t, alice, false); len(in) != 0 {
		t.Errorf("the inbox shows messages from the new key: %q", texts(in))
	}
	held, err := alice.Held(ctx)
	if err != nil || len(held) != 1 || held[0].From != imposter.PublicKey() || held[0].PeerHandle != "bob@kez.test" || held[0].Trust != TrustHeld {
		t.Fatalf("held: %+v, %v", held, err)
	}

	// The flag survives a restart.
	home := alice.cc.Home
	alice.Close()
	alice = openClientIn(t, st, au, home, checkEveryTime)
	if _, err := alice.Send(ctx, "bob", "after restart"); !errors.Is(err, ErrKeyChanged) {
		t.Fatalf("send after a restart: %v", err)
	}

	// Accepting the new key (after checking its fingerprint) re-pins it
	// and releases its held message.
	ct = mustAdd(t, alice, "bob")
	if ct.Key != imposter.PublicKey() || ct.Flag != FlagNone || ct.Verified() {
		t.Errorf("accepted contact: %+v", ct)
	}
	in := mustInbox(t, alice, false)
	if len(in) != 1 || in[0].Text() != "it is me, bob, new phone" || in[0].Trust != TrustTrusted {
		t.Errorf("inbox after accepting: %+v", in)
	}
	mustSend(t, alice, "bob", "welcome back")
	if got := events(t, alice, "bob"); !slices.Equal(got, []string{"added", "verified", "flagged_key_changed", "accepted_new_key"}) {
		t.Errorf("events: %q", got)
	}
}

// An encryption key rotation in the contact's chain is taken silently (and
// recorded); a rollback or a fork of the pinned chain flags the contact and
// holds their messages.
func TestChainRotationRollbackFork(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	alice := openClient(t, st, au, checkEveryTime)
	bob := openClient(t, st, bu)
	mustAdd(t, alice, "bob")
	mustAdd(t, bob, "alice")
	ctx := testCtx(t)
	sigc := &sigchain.Client{BaseURL: st.SigServerURL}

	// Bob rotates his encryption key to generation 1.
	eldest, err := sigc.Fetch(ctx, bu.Key, 0)
	if err != nil {
		t.Fatal(err)
	}
	rot, err := sigchain.NewLink(bu.Identity, bu.Chain, sigchain.TypeSetEncryptionKey, sigchain.SetEncryptionKeyBody(bu.Identity.EncryptionKey(1).PublicKey(), 1), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := sigc.Append(ctx, rot); err != nil {
		t.Fatal(err)
	}
	s := mustSend(t, alice, "bob", "to your new key")
	ct, _ := alice.Contact(ctx, "bob")
	if ct.Generation != 1 || ct.Pin.Seqno != 2 || ct.Flag != FlagNone {
		t.Fatalf("after the rotation: %+v", ct)
	}
	if got := events(t, alice, "bob"); !slices.Equal(got, []string{"added", "encryption_key_rotated"}) {
		t.Errorf("events: %q", got)
	}
	// Bob's client learns its own new generation when a message needs it.
	receiveN(t, bob, 1)
	if m, err := bob.Message(ctx, au.Key, s.ID); err != nil || m.Text() != "to your new key" {
		t.Fatalf("bob: %+v, %v", m, err)
	}

	// The sig-server rolls bob's chain back to the eldest link.
	st.RewriteChain(t, bu.Key, eldest)
	_, err = alice.Send(ctx, "bob", "are you still you?")
	var cr *ChainRewrittenError
	if !errors.As(err, &cr) || !errors.Is(err, ErrChainRewritten) || !errors.Is(err, sigchain.ErrRollback) || cr.Pinned.Seqno != 2 {
		t.Fatalf("send after a rollback: %v", err)
	}
	// Bob's messages are held while the contact is flagged.
	mustSend(t, bob, "alice", "hello?")
	receiveN(t, alice, 1)
	if held, _ := alice.Held(ctx); len(held) != 1 || held[0].Text() != "hello?" {
		t.Errorf("held: %+v", held)
	}

	// A fork: bob (or whoever holds the server) shows another history at
	// a seqno alice has seen. Alice accepts the rolled-back chain first.
	mustAdd(t, alice, "bob")
	if in := mustInbox(t, alice, false); len(in) != 1 {
		t.Errorf("accepting released %d messages", len(in))
	}
	other, err := sigchain.NewLink(bu.Identity, nil, sigchain.TypeEldest, sigchain.EldestBody(bu.Key, bu.Identity.EncryptionKey(0).PublicKey(), 0, bu.Handle.String()), time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	st.RewriteChain(t, bu.Key, []*sigchain.Link{other})
	ct, err = alice.CheckContact(ctx, "bob")
	if !errors.Is(err, ErrChainRewritten) || !errors.Is(err, sigchain.ErrFork) || ct.Flag != FlagChainRewritten {
		t.Fatalf("check after a fork: %+v, %v", ct, err)
	}
	if !strings.Contains(alice.log.String(), "contact flagged") {
		t.Error("the flag was not logged")
	}
}

// A message from a key that is not a contact is a request, stored at once;
// the handle the registry confirms for it is looked up afterwards; adding
// the sender makes it trusted.
func TestRequestFromStranger(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, cu := st.NewUser(t, "alice"), st.NewUser(t, "carol")
	alice, carol := openClient(t, st, au), openClient(t, st, cu)
	mustAdd(t, carol, "alice")
	s := mustSend(t, carol, "alice", "hi, we met yesterday")
	receiveN(t, alice, 1)
	ctx := testCtx(t)
	if in := mustInbox(t, alice, false); len(in) != 0 {
		t.Errorf("a request is in the inbox: %q", texts(in))
	}
	reqs, err := alice.Requests(ctx)
	if err != nil || len(reqs) != 1 || reqs[0].ID != s.ID || reqs[0].Trust != TrustRequest {
		t.Fatalf("requests: %+v, %v", reqs, err)
	}
	if err := alice.ResolveRequests(ctx); err != nil {
		t.Fatal(err)
	}
	reqs, err = alice.Requests(ctx)
	if err != nil || len(reqs) != 1 || reqs[0].PeerHandle != "carol@kez.test" {
		t.Fatalf("requests after the lookup: %+v, %v", reqs, err)
	}
	// No receipt goes to a stranger.
	if alice.Stats().ReceiptsSent != 0 {
		t.Error("a receipt went to a stranger")
	}
	mustAdd(t, alice, "carol")
	if in := mustInbox(t, alice, false); len(in) != 1 || in[0].Text() != "hi, we met yesterday" {
		t.Errorf("inbox after adding carol: %+v", in)
	}
	if reqs, _ := alice.Requests(ctx); len(reqs) != 0 {
		t.Errorf("requests after adding carol: %d", len(reqs))
	}
}
