package systemtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/handles/storetest"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/natsconn"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/nats-io/nats.go"
)

// lookAlikes are the attacks of issue 13, finding 9, and more of their
// kind: each name on the left imitates the registered one on the right.
var lookAlikes = []struct{ name, holder string }{
	{"b0b", "bob"}, {"8o8", "bob"}, {"b.0.b", "bob"},
	{"a1ice", "alice"}, {"al1ce", "alice"}, {"ai1ce", "alice"},
	{"rnallory", "mallory"}, {"rnal1ory", "mallory"}, {"r.n.allory", "mallory"},
}

// TestHostileLookAlikes: with bob, alice and mallory registered at a
// kez-chat-server process, an attacker holding fresh keys tries their
// look-alikes. Each is refused with a *handles.TakenError naming the
// handle it imitates (over HTTP: 409, reason look_alike, existing), none
// is recorded or may log in to NATS, and the server counts them.
func TestHostileLookAlikes(t *testing.T) {
	st := startProcStack(t, procOptions{NoHTTPLimits: true})
	for _, n := range []string{"bob", "alice", "mallory"} {
		st.register(t, n)
	}
	// Positive control: a name that imitates no one registers and logs in.
	carol := st.register(t, "carol")
	loginAs(t, st, carol.id, true)

	for _, la := range lookAlikes {
		_, err := st.tryRegister(la.name)
		var te *handles.TakenError
		holder := handles.Handle{Name: la.holder, Domain: st.Domain}
		if !errors.As(err, &te) || te.Holder != holder || !te.LookAlike() || !errors.Is(err, handles.ErrTaken) {
			t.Errorf("registering %s with %s taken: %v; want a *TakenError naming %s", la.name, holder, err, holder)
			continue
		}
		if status := getStatus(t, st.ChatURL+"/v1/handles/"+la.name); status != http.StatusNotFound {
			t.Errorf("lookup of the refused %s: %d, want 404", la.name, status)
		}
		loginAs(t, st, stacktest.Identity(la.name), false)
	}

	// The HTTP answer itself, to a claim whose chain names the look-alike.
	id := stacktest.Identity("raw-claimer")
	h := handles.Handle{Name: "b0b", Domain: st.Domain}
	link, err := sigchain.NewLink(id, nil, sigchain.TypeEldest,
		sigchain.EldestBody(id.PublicKey(), id.EncryptionKey(0).PublicKey(), 0, h.String()), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := (&sigchain.Client{BaseURL: st.SigURL}).Append(testCtx(t, 10*time.Second), link); err != nil {
		t.Fatal(err)
	}
	claim, err := handles.NewClaim(id, h, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(claim)
	resp, err := http.Post(st.ChatURL+"/v1/handles", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var answer struct{ Error, Reason, Existing string }
	if err := json.Unmarshal(raw, &answer); err != nil || resp.StatusCode != http.StatusConflict ||
		answer.Reason != "look_alike" || answer.Existing != "bob@"+st.Domain || !strings.Contains(answer.Error, "bob@"+st.Domain) {
		t.Errorf("claim of b0b: %d %s; want 409 with reason look_alike and existing bob@%s", resp.StatusCode, raw, st.Domain)
	}

	metrics := getBody(t, st.ChatURL+"/metrics")
	if want := "kez_chat_handle_lookalikes_refused_total 10\n"; !strings.Contains(metrics, want) {
		t.Errorf("metrics lack %q", want)
	}
	if !strings.Contains(st.chatLog(), "is too close to bob@"+st.Domain) {
		t.Error("the chat-server did not log the refused look-alike")
	}
}

// TestHostileLookAlikesAfterUpgrade: a kez-chat-server process opens a
// registry written under the old skeleton rule, which let both mallory
// and rnallory in. Both keep logging in; bob, registered then, still
// blocks b0b; and every new look-alike is refused naming the handle held.
func TestHostileLookAlikesAfterUpgrade(t *testing.T) {
	db := filepath.Join(t.TempDir(), "chat.db")
	var recs []handles.Record
	for _, n := range []string{"bob", "mallory", "rnallory"} {
		r := storetest.Rec(n, stacktest.Identity(n).PublicKey())
		r.Handle.Domain = procDomain
		recs = append(recs, r)
	}
	// Positive control: the old rule took mallory and rnallory side by side.
	storetest.WriteRule1SQLite(t, db, recs)

	st := startProcStack(t, procOptions{NoHTTPLimits: true, ChatArgs: []string{"--db", db}})
	for _, n := range []string{"bob", "mallory", "rnallory"} {
		loginAs(t, st, stacktest.Identity(n), true)
		if status := getStatus(t, st.ChatURL+"/v1/handles/"+n); status != http.StatusOK {
			t.Errorf("lookup of %s after the upgrade: %d", n, status)
		}
	}
	for look, holder := range map[string]string{"b0b": "bob", "rnal1ory": "mallory", "ma11ory": "mallory", "8ob": "bob"} {
		_, err := st.tryRegister(look)
		var te *handles.TakenError
		if !errors.As(err, &te) || te.Holder != (handles.Handle{Name: holder, Domain: st.Domain}) {
			t.Errorf("registering %s after the upgrade: %v; want a *TakenError naming %s", look, err, holder)
		}
	}
	st.register(t, "carol") // and new names still register
}

// loginAs logs id in to the stack's NATS and reports a mismatch with
// want (true: the login must work; false: the broker must refuse it).
func loginAs(t *testing.T, st *procStack, id *kez.Identity, want bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := natsconn.Connect(ctx, st.NATSURL, id, nats.NoReconnect())
	if err == nil {
		nc.Close()
	}
	switch {
	case want && err != nil:
		t.Errorf("the login of %s failed: %v", id.PublicKey(), err)
	case !want && err == nil:
		t.Errorf("%s, which holds no handle, logged in", id.PublicKey())
	case !want && !errors.Is(err, nats.ErrAuthorization):
		t.Errorf("the login of %s failed, but not as refused: %v", id.PublicKey(), err)
	}
}

// getBody returns the body of a 200 answer to GET url.
func getBody(t testing.TB, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return string(b)
}

// getStatus returns the status of GET url.
func getStatus(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
