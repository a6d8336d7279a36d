package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
)

// alice publishes a folder, bob mirrors it: the same bytes arrive. With
// --to bob, carol (another registered user) sees and fetches nothing.
func TestPublishAndMirror(t *testing.T) {
	for _, private := range []bool{false, true} {
		name := "public"
		if private {
			name = "private"
		}
		t.Run(name, func(t *testing.T) { testPublishAndMirror(t, private) })
	}
}

func testPublishAndMirror(t *testing.T, private bool) {
	st := stacktest.Start(t, stacktest.Options{})
	alice, bob, carol := st.NewUser(t, "alice"), st.NewUser(t, "bob"), st.NewUser(t, "carol")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	src := t.TempDir()
	want := map[string][]byte{"notes.txt": []byte("meeting at noon\n"), "photo.raw": make([]byte, 1<<20+7)}
	rand.Read(want["photo.raw"])
	for n, b := range want {
		if err := os.WriteFile(filepath.Join(src, n), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	os.Mkdir(filepath.Join(src, "subfolder"), 0o700) // not a file: skipped

	args := []string{"publish", src}
	if private {
		args = append(args, "--to", "bob")
	}
	pubCtx, stopPub := context.WithCancel(ctx)
	out := newWatch("serving 2 files")
	pubDone := make(chan error, 1)
	go func() { pubDone <- run(pubCtx, args, getenv(st.Env(alice)), out) }()
	t.Cleanup(func() {
		stopPub()
		if err := <-pubDone; err != nil {
			t.Errorf("publish: %v", err)
		}
	})
	select {
	case <-out.seen:
	case err := <-pubDone:
		pubDone <- err
		t.Fatalf("publish stopped: %v\n%s", err, out)
	case <-ctx.Done():
		t.Fatalf("publish did not start serving:\n%s", out)
	}

	dst := filepath.Join(t.TempDir(), "mirror")
	var log bytes.Buffer
	if err := run(ctx, []string{"mirror", "alice", dst}, getenv(st.Env(bob)), &log); err != nil {
		t.Fatalf("bob mirrors: %v\n%s", err, log.String())
	}
	for n, b := range want {
		got, err := os.ReadFile(filepath.Join(dst, n))
		if err != nil || !bytes.Equal(got, b) {
			t.Errorf("bob's %s: %d bytes, err %v; want the %d bytes alice shared", n, len(got), err, len(b))
		}
	}

	carolDst := filepath.Join(t.TempDir(), "carol")
	log.Reset()
	if err := run(ctx, []string{"mirror", "alice", carolDst}, getenv(st.Env(carol)), &log); err != nil {
		t.Fatalf("carol mirrors: %v\n%s", err, log.String())
	}
	left, _ := os.ReadDir(carolDst)
	if private && len(left) != 0 {
		t.Errorf("carol got %v of files shared with bob only", left)
	}
	if !private && len(left) != 2 {
		t.Errorf("carol got %d public files, want 2", len(left))
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"publish"}, {"mirror", "alice"}, {"nonsense", "x"}} {
		if err := run(context.Background(), args, func(string) string { return "" }, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "usage:") {
			t.Errorf("run %q: %v, want the usage", args, err)
		}
	}
}

func getenv(env map[string]string) func(string) string {
	return func(k string) string { return env[k] }
}

// watch is an output that tells when a line containing a text was written.
type watch struct {
	mu   sync.Mutex
	buf  strings.Builder
	text string
	seen chan struct{}
	once sync.Once
}

func newWatch(text string) *watch { return &watch{text: text, seen: make(chan struct{})} }

func (w *watch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.text) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

func (w *watch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
