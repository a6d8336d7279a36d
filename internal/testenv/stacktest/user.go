package stacktest

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// User is a registered user of a stack.
type User struct {
	Name     string         // the local name, e.g. "alice"
	Identity *kez.Identity  // from [Identity](Name)
	Key      kez.PublicKey  // Identity.PublicKey()
	Handle   handles.Handle // Name@Domain, claimed at the chat-server
	Chain    *sigchain.State
	// Home is a fresh KEZ_HOME holding the identity (unencrypted) and a
	// profile with the handle and the stack's servers, as "kez init" and
	// "kez register" leave it.
	Home string
}

// NewUser registers name on the stack the way "kez register" does, with
// [handles.Register]: the identity of [Identity](name), its eldest
// sigchain link (generation 0 X25519 key, handle name@Domain) appended to
// the sig-server, and the handle claimed at the chat-server. Calling it again for the same name
// on the same stack returns the same registration (with a new Home).
// Any failure fails the test.
func (s *Stack) NewUser(t testing.TB, name string) *User {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, err := handles.Rules{DefaultDomain: s.Domain, AllowLocal: s.allowLocal}.Parse(name)
	if err != nil {
		t.Fatalf("stacktest: user name %q: %v", name, err)
	}
	if h.Domain != s.Domain {
		t.Fatalf("stacktest: user %q is not of the stack's domain %s", name, s.Domain)
	}
	id := Identity(h.Name)
	u := &User{Name: h.Name, Identity: id, Key: id.PublicKey(), Handle: h}

	r, err := handles.Register(ctx, id, h, handles.RegisterOptions{ServerURL: s.ServerURL, SigServerURL: s.SigServerURL})
	if err != nil {
		t.Fatalf("stacktest: registering %s: %v", h, err)
	}
	u.Chain = r.Chain

	u.Home = filepath.Join(t.TempDir(), "kez-home")
	if err := kez.SaveIdentity(u.Home, id, nil); err != nil {
		t.Fatalf("stacktest: saving the identity of %s: %v", h, err)
	}
	if err := writeProfile(u.Home, u, s); err != nil {
		t.Fatalf("stacktest: %v", err)
	}
	return u
}

// profile mirrors the kez CLI's KEZ_HOME/profile.json (cmd/kez/identity.go),
// so that a CLI run with Home knows its handle and servers. cmd/kez's tests
// check that the CLI reads what this writes.
type profile struct {
	Key       string `json:"key,omitempty"`
	Handle    string `json:"handle,omitempty"`
	Domain    string `json:"domain,omitempty"`
	Server    string `json:"server,omitempty"`
	SigServer string `json:"sig_server,omitempty"`
}

func writeProfile(home string, u *User, s *Stack) error {
	b, err := json.MarshalIndent(profile{
		Key:       u.Key.String(),
		Handle:    u.Handle.String(),
		Domain:    s.Domain,
		Server:    s.ServerURL,
		SigServer: s.SigServerURL,
	}, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(home, "profile.json"), append(b, '\n'), 0o600)
}
