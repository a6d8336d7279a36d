package ui

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
)

// A private share from the files screen ("p") goes to a contact at the
// key pinned for them, and to a flagged contact not at all: bob's handle
// moved to another key, so sharing with bob (alone or with others) is
// refused with a sentence, nothing is shared, and bob is flagged as a
// message to him would flag him. carol, no contact, gets the file at the
// key her handle names; dave, a contact, at his pinned key.
func TestPrivateShareRefusesFlaggedContact(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	st.NewUser(t, "carol")
	st.NewUser(t, "dave")
	cc := client.Config{Identity: au.Identity, Home: au.Home, NATSURL: st.NATSURL, ServerURL: st.ServerURL,
		SigServerURL: st.SigServerURL, Domain: st.Domain, Resolver: st.Resolver()}
	c, err := chat.Open(ctx, chat.Config{Client: cc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := files.Open(ctx, files.Config{Client: cc, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"bob", "dave"} {
		if _, err := c.AddContact(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	st.ReleaseHandle(t, "bob")
	if _, err := handles.Register(ctx, stacktest.Identity("not-bob"), bu.Handle, handles.RegisterOptions{ServerURL: st.ServerURL, SigServerURL: st.SigServerURL}); err != nil {
		t.Fatal(err)
	}

	v := newTestView(t)
	v.setSharing(s) // closed with the view
	v.chat = func() *chat.Client { return c }
	v.showOwn()
	path := filepath.Join(v.cfg.DownloadDir, "plans.txt")
	if err := os.WriteFile(path, []byte("the plans"), 0o600); err != nil {
		t.Fatal(err)
	}
	share := func(to string) string {
		t.Helper()
		v.update(key("p"))
		for _, r := range path {
			v.update(key(string(r)))
		}
		v.update(key("enter"))
		for _, r := range to {
			v.update(key(string(r)))
		}
		_, cmd := v.update(key("enter"))
		if cmd == nil {
			t.Fatalf("sharing with %s started nothing: %q", to, v.note)
		}
		v.update(cmd())
		return v.note
	}

	for _, to := range []string{"bob", "carol, @bob"} {
		if note := share(to); !v.noteErr || !strings.Contains(note, "nothing was shared: @bob@kez.test's key changed") || !strings.Contains(note, "Ctrl+A") {
			t.Errorf("a share to %s: %q", to, note)
		}
		if own, err := s.Shared(ctx); err != nil || len(own) != 0 {
			t.Fatalf("shared after the refusal: %+v, %v", own, err)
		}
	}
	if ct, err := c.Contact(ctx, "bob"); err != nil || ct.Flag != chat.FlagKeyChanged || ct.Key != bu.Key {
		t.Errorf("bob after the refusal: %+v, %v", ct, err)
	}

	if note := share("carol, dave"); v.noteErr || !strings.Contains(note, "privately with") {
		t.Fatalf("a share to carol and dave: %q", note)
	}
	own, err := s.Shared(ctx)
	if err != nil || len(own) != 1 || strings.Join(own[0].Recipients, " ") != "carol@kez.test dave@kez.test" {
		t.Errorf("shared: %+v, %v", own, err)
	}

	// The screen's sentence for a handle that moved between the check
	// and the share.
	moved := &files.RecipientKeyError{Handle: "dave@kez.test"}
	if got := v.shareSentence(moved, path); !strings.Contains(got, "nothing was shared: @dave@kez.test names another key") {
		t.Errorf("a moved recipient: %q", got)
	}
}
