package main

import (
	"bytes"
	"context"
	"encoding/json"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/files/format"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
)

// watchWriter collects output and signals when a wanted text appears.
type watchWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	wants map[string]chan struct{}
}

func newWatchWriter(wants ...string) *watchWriter {
	w := &watchWriter{wants: map[string]chan struct{}{}}
	for _, s := range wants {
		w.wants[s] = make(chan struct{})
	}
	return w
}

func (w *watchWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	for s, ch := range w.wants {
		if ch != nil && strings.Contains(w.buf.String(), s) {
			close(ch)
			w.wants[s] = nil
		}
	}
	return len(p), nil
}

func (w *watchWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// await waits until text appeared (the channel from newWatchWriter).
func (w *watchWriter) await(t *testing.T, text string) {
	t.Helper()
	w.mu.Lock()
	ch, ok := w.wants[text]
	w.mu.Unlock()
	if !ok {
		t.Fatalf("not watching for %q", text)
	}
	if ch == nil {
		return
	}
	select {
	case <-ch:
	case <-time.After(30 * time.Second):
		t.Fatalf("%q never appeared; output so far:\n%s", text, w.String())
	}
}

// background runs one command line until cancel; wait returns its exit
// status (and may be called more than once).
func background(t *testing.T, environ map[string]string, stdout, stderr *watchWriter, args ...string) (cancel func(), wait func() int) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		e := &env{stdin: strings.NewReader(""), stdout: stdout, stderr: stderr, getenv: func(k string) string { return environ[k] }}
		done <- run(ctx, e, args)
	}()
	var once sync.Once
	var code int
	wait = func() int {
		once.Do(func() { code = <-done })
		return code
	}
	t.Cleanup(func() {
		cancel()
		wait()
	})
	return cancel, wait
}

func filesJSONOf(t *testing.T, environ map[string]string, args ...string) []fileJSON {
	t.Helper()
	r := mustRun(t, environ, "", append([]string{"files", "--json"}, args...)...)
	var out []fileJSON
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("files --json: %v\n%s", err, r.stdout)
	}
	for _, k := range []string{`"name"`, `"size"`, `"cid"`, `"private"`} {
		if len(out) > 0 && !strings.Contains(r.stdout, k) {
			t.Errorf("files --json lacks %s: %s", k, r.stdout)
		}
	}
	return out
}

// ownFilesJSONOf runs "kez files --json" (your own files), checking that
// the documented fields are there for every file.
func ownFilesJSONOf(t *testing.T, environ map[string]string) []ownFileJSON {
	t.Helper()
	r := mustRun(t, environ, "", "files", "--json")
	var out []ownFileJSON
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("files --json: %v\n%s", err, r.stdout)
	}
	var raw []map[string]any
	json.Unmarshal([]byte(r.stdout), &raw)
	for _, f := range raw {
		for _, k := range []string{"name", "size", "cid", "private", "media_type", "mtime", "path", "recipients"} {
			if _, ok := f[k]; !ok {
				t.Errorf("files --json lacks %q: %s", k, r.stdout)
			}
		}
	}
	return out
}

func TestShareFilesFetchServe(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	loopback := "/ip4/127.0.0.1/tcp/0"
	// KEZ_LISTEN is the chat-server's HTTP address (the Docker image sets
	// it); the CLI must not take it for a libp2p multiaddr.
	alice := with(st.Env(au), "KEZ_P2P_LISTEN", loopback, "KEZ_LISTEN", "0.0.0.0:8080")
	bob := with(st.Env(bu), "KEZ_P2P_LISTEN", loopback, "KEZ_LISTEN", "0.0.0.0:8080")
	dir := t.TempDir()

	report := filepath.Join(dir, "report.pdf")
	data := make([]byte, 3<<20+5)
	mrand.NewChaCha8([32]byte{9}).Read(data)
	os.WriteFile(report, data, 0o600)
	r := mustRun(t, alice, "", "share", report)
	for _, want := range []string{`Shared "report.pdf" publicly: 3.0 MiB`, `kez fetch @alice@kez.test "report.pdf"`} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("share output lacks %q:\n%s", want, r.stdout)
		}
	}
	secret := filepath.Join(dir, "secret.txt")
	os.WriteFile(secret, []byte("for bob only"), 0o600)
	r = mustRun(t, alice, "", "share", secret, "--to", "bob", "--name", "for-bob.txt")
	if !strings.Contains(r.stdout, `Shared "for-bob.txt" privately with @bob@kez.test`) {
		t.Errorf("share --to output:\n%s", r.stdout)
	}

	// Browsing works while alice is offline; bob sees the private file.
	list := filesJSONOf(t, bob, "alice")
	if len(list) != 2 || list[0].Name != "report.pdf" || list[0].Size != int64(len(data)) || list[0].Private ||
		list[1].Name != "for-bob.txt" || !list[1].Private {
		t.Fatalf("bob's view: %+v", list)
	}
	if r := mustRun(t, bob, "", "files", "@alice@kez.test"); !strings.Contains(r.stdout, "shares 2 file(s) you can see") || !strings.Contains(r.stdout, "report.pdf") {
		t.Errorf("files text:\n%s", r.stdout)
	}
	// A bare name is shown as the full handle, as every other command does.
	if r := mustRun(t, bob, "", "files", "alice"); !strings.Contains(r.stdout, "@alice@kez.test shares 2 file(s)") || !strings.Contains(r.stdout, "kez fetch @alice@kez.test NAME") {
		t.Errorf("files with a bare name:\n%s", r.stdout)
	}
	own := ownFilesJSONOf(t, alice)
	if len(own) != 2 || own[0].Path != report || len(own[1].Recipients) != 1 || own[1].Recipients[0] != "bob@kez.test" {
		t.Errorf("alice's own files: %+v", own)
	}

	// Alice offline: a clear error, and nothing written.
	out := filepath.Join(dir, "got.pdf")
	r = kezCmd(t, bob, "", "fetch", "alice", "report.pdf", "-o", out)
	if r.code != 1 || !strings.Contains(r.stderr, "alice@kez.test is offline: ask them to run kez serve, or add --wait to wait until they do") {
		t.Fatalf("fetch from an offline owner: exit %d\n%s", r.code, r.stderr)
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("an offline fetch wrote the file")
	}

	// bob waits; alice comes online once he said he is waiting.
	bout, berr := newWatchWriter(), newWatchWriter("is offline or cannot be reached; waiting")
	_, fetched := background(t, bob, bout, berr, "fetch", "--wait", "alice", "report.pdf", "-o", out)
	berr.await(t, "is offline or cannot be reached; waiting")
	aout, aerr := newWatchWriter("Online as @alice@kez.test"), newWatchWriter("A message request from")
	stopAlice, served := background(t, alice, aout, aerr, "serve")
	aout.await(t, "Online as @alice@kez.test")
	if code := fetched(); code != 0 {
		t.Fatalf("fetch --wait: exit %d\n%s\n%s", code, bout.String(), berr.String())
	}
	if !strings.Contains(bout.String(), `Saved "report.pdf" (3.0 MiB, verified against its CID) to `+out) ||
		!strings.HasSuffix(bout.String(), "Fetched \"report.pdf\" (3.0 MiB) from alice@kez.test directly.\n") {
		t.Errorf("fetch output:\n%s", bout.String())
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, data) {
		t.Fatal("the fetched file differs")
	}
	if !strings.Contains(aout.String(), "Serving 2 shared file(s)") {
		t.Errorf("serve output:\n%s", aout.String())
	}

	// The private file, decrypted; into a folder, under its shared name.
	bobDir := t.TempDir()
	r = mustRun(t, bob, "", "fetch", "alice", "for-bob.txt", "-o", bobDir)
	if got, _ := os.ReadFile(filepath.Join(bobDir, "for-bob.txt")); string(got) != "for bob only" || !strings.Contains(r.stdout, "verified and decrypted") {
		t.Fatalf("private fetch: %q\n%s", got, r.stdout)
	}
	// Existing files are kept unless --force.
	if r := kezCmd(t, bob, "", "fetch", "alice", "report.pdf", "-o", out); r.code != 1 || !strings.Contains(r.stderr, "already exists") {
		t.Errorf("fetch over an existing file: exit %d\n%s", r.code, r.stderr)
	}
	r = mustRun(t, bob, "", "fetch", "alice", "report.pdf", "-o", out, "--force", "--json")
	var fj struct {
		Name, Path, Owner, Route string
		Size                     int64
		Routes                   map[string]int64
	}
	if err := json.Unmarshal([]byte(r.stdout), &fj); err != nil || fj.Name != "report.pdf" || fj.Path != out || fj.Owner != "alice@kez.test" ||
		fj.Route != "direct" || fj.Size != int64(len(data)) || fj.Routes == nil {
		t.Errorf("fetch --json: %v\n%s", err, r.stdout)
	}

	// Unknown names are clear errors.
	if r := kezCmd(t, bob, "", "fetch", "alice", "nope.pdf"); r.code != 1 || !strings.Contains(r.stderr, `alice@kez.test shares no file named "nope.pdf"`) {
		t.Errorf("fetch of an unknown name: exit %d\n%s", r.code, r.stderr)
	}

	// kez serve also receives messages.
	mustRun(t, bob, "", "contacts", "add", "alice")
	mustRun(t, bob, "", "send", "alice", "did you get it?")
	aerr.await(t, "A message request from")

	// Unshare: gone from the list and from what alice's machine sends.
	if r := mustRun(t, alice, "", "unshare", "report.pdf"); !strings.Contains(r.stdout, `Unshared "report.pdf"`) {
		t.Errorf("unshare:\n%s", r.stdout)
	}
	if list := filesJSONOf(t, bob, "alice"); len(list) != 1 || list[0].Name != "for-bob.txt" {
		t.Errorf("after unshare: %+v", list)
	}
	if r := kezCmd(t, alice, "", "unshare", "report.pdf"); r.code != 1 || !strings.Contains(r.stderr, `you share no file named "report.pdf"`) {
		t.Errorf("unshare twice: exit %d\n%s", r.code, r.stderr)
	}

	stopAlice()
	if code := served(); code != 0 {
		t.Errorf("serve exited %d\n%s", code, aerr.String())
	}
	if !strings.Contains(aout.String(), "Offline.") {
		t.Errorf("serve output at the end:\n%s", aout.String())
	}
}

func TestFilesCommandsUsage(t *testing.T) {
	for _, args := range [][]string{
		{"share"}, {"share", "a", "b"}, {"unshare"}, {"files", "a", "b"},
		{"fetch", "alice"}, {"fetch", "alice", "x", "--timeout", "-1s"}, {"serve", "extra"},
	} {
		if r := kezCmd(t, nil, "", args...); r.code != 2 || !strings.Contains(r.stderr, "usage: kez "+args[0]) {
			t.Errorf("kez %v: exit %d\n%s", args, r.code, r.stderr)
		}
	}
	home, _ := newHome(t)
	env := map[string]string{"KEZ_HOME": home}
	if r := kezCmd(t, env, "", "fetch", "alice@kez.test", "x"); r.code != 1 || !strings.Contains(r.stderr, "NATS_URL") {
		t.Errorf("fetch without NATS: exit %d\n%s", r.code, r.stderr)
	}
	if r := kezCmd(t, env, "", "share", filepath.Join(home, "identity")); r.code != 1 || !strings.Contains(r.stderr, "sig-server") {
		t.Errorf("share without a sig-server: exit %d\n%s", r.code, r.stderr)
	}
	if r := mustRun(t, env, "", "files"); !strings.Contains(r.stdout, "You share no files") {
		t.Errorf("files with nothing shared:\n%s", r.stdout)
	}
}

func TestProgressLine(t *testing.T) {
	var b bytes.Buffer
	now := time.Unix(1000, 0)
	p := &progressLine{w: &b, name: "x.bin", now: func() time.Time { return now }}
	p.update(0, 4<<20)
	now = now.Add(50 * time.Millisecond)
	p.update(1<<20, 4<<20) // too soon: not drawn
	now = now.Add(time.Second)
	p.update(2<<20, 4<<20)
	p.finish()
	out := b.String()
	if strings.Count(out, "\r") != 3 || !strings.Contains(out, "x.bin [============            ] 2.0 MiB / 4.0 MiB  50.0%  1.9 MiB/s") || !strings.HasSuffix(out, "\n") {
		t.Errorf("progress output %q", out)
	}
	// A private file's bar counts the encrypted blob, and its final line
	// says so beside the decrypted size kez fetch prints next.
	b.Reset()
	p = &progressLine{w: &b, name: "x.bin", now: func() time.Time { return now }}
	p.update(100, 100)
	p.note = "(encrypted)"
	p.finish()
	if last := b.String()[strings.LastIndex(b.String(), "\r"):]; !strings.Contains(last, "100 B / 100 B 100.0%") || !strings.Contains(last, "(encrypted)") {
		t.Errorf("final line of a private fetch %q", last)
	}
	var none bytes.Buffer
	(&progressLine{w: &none, now: time.Now}).finish()
	if none.Len() != 0 {
		t.Error("finish drew a line that never started")
	}
	if humanSize(1023) != "1023 B" || humanSize(1536) != "1.5 KiB" || humanSize(format.ChunkSize) != "256.0 KiB" {
		t.Error("humanSize")
	}
}
