package sqlitepins_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/kez-lat/kez-chat/internal/testenv/tlogtest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/translog"
	"github.com/kez-lat/kez-chat/translog/sqlitepins"
)

func open(t *testing.T, path string) *sqlitepins.Pins {
	t.Helper()
	p, err := sqlitepins.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func entry(seqno uint64) translog.Entry {
	var k kez.PublicKey
	k[0] = 9
	d := sha256.Sum256([]byte{byte(seqno)})
	id := "b" + base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding).
		EncodeToString(append([]byte{0x01, 0x55, 0x12, 0x20}, d[:]...))
	return translog.Entry{Key: k, Seqno: seqno, ID: id}
}

// TestPersisted: what a Monitor learned survives a restart: the pinned
// key (a changed key is still refused) and the newest checkpoint (a
// split view against it is still detected).
func TestPersisted(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), sqlitepins.FileName)
	a := tlogtest.New(t, tlogtest.Options{})
	b := tlogtest.New(t, tlogtest.Options{}) // same key, another tree
	a.Append(t, entry(1), entry(2))
	b.Append(t, entry(1), entry(3))
	url := a.Serve(t)
	m := &translog.Monitor{Pins: open(t, path), Logger: slog.New(slog.DiscardHandler)}
	if err := m.CheckHead(ctx, url, entry(1), a.HeadProof(t, 0)); err != nil {
		t.Fatal(err)
	}

	pins := open(t, path) // a second process, or the next run
	li, ok, err := pins.LogOf(ctx, url)
	if err != nil || !ok || li != a.Info {
		t.Fatalf("LogOf: %+v %v %v", li, ok, err)
	}
	m2 := &translog.Monitor{Pins: pins, Logger: slog.New(slog.DiscardHandler)}
	if n, _ := m2.Latest(ctx, url); !bytes.Equal(n, a.Checkpoint(t).Note) {
		t.Fatalf("Latest %q", n)
	}
	if err := m2.Witness(ctx, url, b.Checkpoint(t).Note); !errors.Is(err, translog.ErrSplitView) {
		t.Fatalf("split view after a restart: %v", err)
	}
	if err := m2.CheckHead(ctx, url, entry(1), nil); !errors.Is(err, translog.ErrNotLogged) {
		t.Fatalf("no proof from a pinned server: %v", err)
	}
}

// TestSetLatestNeverShrinks: a smaller checkpoint written after a bigger
// one (two processes racing) does not replace it; garbage is refused.
func TestSetLatestNeverShrinks(t *testing.T) {
	ctx := context.Background()
	p := open(t, filepath.Join(t.TempDir(), "log.db"))
	big := []byte("o\n10\nroot\n\n— sig\n")
	small := []byte("o\n9\nroot\n\n— sig\n")
	if err := p.SetLatest(ctx, "o", big); err != nil {
		t.Fatal(err)
	}
	if err := p.SetLatest(ctx, "o", small); err != nil {
		t.Fatal(err)
	}
	if n, ok, _ := p.Latest(ctx, "o"); !ok || !bytes.Equal(n, big) {
		t.Fatalf("latest %q", n)
	}
	for _, bad := range []string{"", "o", "o\nx\n", "o\n-1\n", "o\n99999999999999999999\n"} {
		if err := p.SetLatest(ctx, "o", []byte(bad)); !errors.Is(err, translog.ErrBadCheckpoint) {
			t.Errorf("SetLatest(%q): %v", bad, err)
		}
	}
	if _, ok, err := p.Latest(ctx, "other"); ok || err != nil {
		t.Fatalf("unknown origin: %v %v", ok, err)
	}
	if _, ok, err := p.LogOf(ctx, "http://nowhere"); ok || err != nil {
		t.Fatalf("unknown server: %v %v", ok, err)
	}
}

// TestFileMode: the file is private to its user.
func TestFileMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	open(t, path)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
}
