package systemtest

import (
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/chat"
	kezclient "github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/files"
)

// TestDatabaseFileModes: every SQLite file that the kez-chat-server and
// kez-sig-server programs and a client (chat.db, shares.db) create is mode
// 0600, its -wal and -shm files included, as the restore step of
// docs/operators.md §6 expects: no other account on the machine reads the
// registry, the chains, or a user's history and shares. The files are
// looked at while everything has them open, so the -wal and -shm files
// exist.
func TestDatabaseFileModes(t *testing.T) {
	st := startProcStack(t, procOptions{})
	alice := st.register(t, "alice")
	st.register(t, "bob")
	ctx := testCtx(t, time.Minute)
	home := t.TempDir()
	c, err := chat.Open(ctx, chat.Config{Client: kezclient.Config{Identity: alice.id, Home: home, NATSURL: st.NATSURL, ServerURL: st.ChatURL,
		SigServerURL: st.SigURL, Domain: st.Domain, Logger: slog.New(slog.DiscardHandler)}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.AddContact(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Send(ctx, "bob", "hello"); err != nil {
		t.Fatal(err)
	}
	sh, err := files.Open(ctx, files.Config{Client: kezclient.Config{Identity: alice.id, Home: home, SigServerURL: st.SigURL,
		ServerURL: st.ChatURL, Domain: st.Domain, Logger: slog.New(slog.DiscardHandler)}, NATS: c.Conn(), ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}})
	if err != nil {
		t.Fatal(err)
	}
	defer sh.Close()
	doc := filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(doc, []byte("see you at noon"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := sh.Share(ctx, doc); err != nil {
		t.Fatal(err)
	}

	want := map[string]bool{}
	for _, db := range []string{filepath.Join(st.Dir, "sig.db"), filepath.Join(st.Dir, "chat.db"), filepath.Join(home, "chat.db"), filepath.Join(home, "shares.db")} {
		for _, suffix := range []string{"", "-wal", "-shm"} {
			want[db+suffix] = true
		}
	}
	for _, dir := range []string{st.Dir, home} {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			if n := d.Name(); !strings.HasSuffix(n, ".db") && !strings.HasSuffix(n, ".db-wal") && !strings.HasSuffix(n, ".db-shm") {
				return nil
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("%s has mode %v, want 0600", path, fi.Mode().Perm())
			}
			delete(want, path)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for path := range want {
		t.Errorf("%s was not made: the test no longer looks at what it means to", path)
	}
}
