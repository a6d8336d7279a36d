package readmetest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/devstack"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
)

// section is the README heading whose Go blocks are the snippet: the
// setup every user runs, alice's part, bob's part.
const section = "## The SDK in a few lines"

// program is the function the README describes around the blocks: given
// ctx, name, dir, serverURL and natsURL, returning an error. ctx ends on
// SIGINT. The imports are those the blocks may use; the blank uses keep
// the program compiling whichever they use.
const program = `package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/kez"
)

var (
	_ = errors.Is
	_ = fmt.Println
	_ = chat.Open
	_ = client.Config{}
	_ = files.Open
	_ = handles.Parse
	_ = kez.NewIdentity
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	run := bob
	if os.Args[1] == "alice" {
		run = alice
	}
	if err := run(ctx, os.Args[1], os.Args[2], os.Getenv("KEZ_SERVER"), os.Getenv("NATS_URL")); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func alice(ctx context.Context, name, dir, serverURL, natsURL string) error {
SETUP
ALICE
}

func bob(ctx context.Context, name, dir, serverURL, natsURL string) error {
SETUP
BOB
}
`

// goBlocks returns the ```go blocks of the README section that starts
// with heading, up to the next "## " heading.
func goBlocks(t *testing.T, readme, heading string) []string {
	t.Helper()
	_, rest, ok := strings.Cut(readme, "\n"+heading+"\n")
	if !ok {
		t.Fatalf("README.md has no section %q", heading)
	}
	if i := strings.Index(rest, "\n## "); i >= 0 {
		rest = rest[:i]
	}
	var blocks []string
	for {
		_, after, ok := strings.Cut(rest, "\n```go\n")
		if !ok {
			return blocks
		}
		block, after2, ok := strings.Cut(after, "\n```\n")
		if !ok {
			t.Fatalf("an unterminated Go block in %q", heading)
		}
		blocks, rest = append(blocks, block), after2
	}
}

// lines collects a process's output lines.
type lines struct {
	ch  chan string
	buf bytes.Buffer // everything, for failure messages: read it after drain
}

// drain waits until the output ended (the process exited) and returns it
// all.
func (l *lines) drain() string {
	for range l.ch {
	}
	return l.buf.String()
}

func collect(r io.Reader) *lines {
	l := &lines{ch: make(chan string, 64)}
	go func() {
		sc := bufio.NewScanner(io.TeeReader(r, &l.buf))
		for sc.Scan() {
			l.ch <- sc.Text()
		}
		close(l.ch)
	}()
	return l
}

// await returns the first line containing want, failing the test if the
// output ends or ctx ends first.
func (l *lines) await(ctx context.Context, t *testing.T, who, want string) string {
	t.Helper()
	for {
		select {
		case line, ok := <-l.ch:
			if !ok {
				t.Fatalf("%s ended without printing %q", who, want)
			}
			if strings.Contains(line, want) {
				return line
			}
		case <-ctx.Done():
			t.Fatalf("%s did not print %q in time", who, want)
		}
	}
}

func TestREADMESnippetRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a program and runs a dev stack")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := goBlocks(t, string(readme), section)
	if len(blocks) != 3 {
		t.Fatalf("the section %q has %d Go blocks, want 3 (setup, alice, bob)", section, len(blocks))
	}
	src := strings.NewReplacer("SETUP", blocks[0], "ALICE", blocks[1], "BOB", blocks[2]).Replace(program)

	// Build it as a package of the module that exists only in an overlay.
	tmp := t.TempDir()
	mainGo := filepath.Join(tmp, "main.go")
	if err := os.WriteFile(mainGo, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	overlay, err := json.Marshal(map[string]map[string]string{"Replace": {filepath.Join(root, "internal", "testenv", "readmetest", "snippet", "main.go"): mainGo}})
	if err != nil {
		t.Fatal(err)
	}
	overlayFile := filepath.Join(tmp, "overlay.json")
	if err := os.WriteFile(overlayFile, overlay, 0o600); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(tmp, "snippet")
	build := exec.CommandContext(ctx, "go", "build", "-overlay", overlayFile, "-o", bin, "./internal/testenv/readmetest/snippet")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("README.md's SDK snippet does not compile: %v\n%s\nthe program:\n%s", err, out, src)
	}

	st, err := devstack.Start(ctx, devstack.Config{Dir: t.TempDir(), NATSServer: natstest.ServerBinary(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	env := append(os.Environ(), "KEZ_SERVER="+st.ServerURL, "NATS_URL="+st.NATSURL)

	// Alice, in a folder with report.pdf, until she has read bob's message.
	aliceWork := t.TempDir()
	report := make([]byte, 300_000)
	rand.NewChaCha8([32]byte{1}).Read(report)
	if err := os.WriteFile(filepath.Join(aliceWork, "report.pdf"), report, 0o600); err != nil {
		t.Fatal(err)
	}
	alice := exec.Command(bin, "alice", filepath.Join(t.TempDir(), "alice"))
	alice.Dir, alice.Env, alice.Stderr = aliceWork, env, &bytes.Buffer{}
	aliceOut, err := alice.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.Start(); err != nil {
		t.Fatal(err)
	}
	aliceDone := make(chan error, 1)
	aliceLines := collect(aliceOut)
	go func() { aliceDone <- alice.Wait() }()
	t.Cleanup(func() {
		alice.Process.Kill()
		<-aliceDone
		out := aliceLines.drain()
		if t.Failed() {
			t.Logf("alice's output:\n%s\nalice's errors:\n%s", out, alice.Stderr)
		}
	})
	aliceLines.await(ctx, t, "alice", "your paper backup:")
	aliceLines.await(ctx, t, "alice", "sharing report.pdf")

	// Bob, start to end.
	bobWork := t.TempDir()
	bob := exec.CommandContext(ctx, bin, "bob", filepath.Join(t.TempDir(), "bob"))
	bob.Dir, bob.Env = bobWork, env
	out, err := bob.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "fetched ") {
		t.Fatalf("bob's program: %v\n%s", err, out)
	}
	got, err := os.ReadFile(filepath.Join(bobWork, "report.pdf"))
	if err != nil || !bytes.Equal(got, report) {
		t.Fatalf("bob's copy of report.pdf: %v (%d bytes, want the %d alice shared)", err, len(got), len(report))
	}

	// Alice's Run shows bob's message; on SIGINT her program ends cleanly.
	if line := aliceLines.await(ctx, t, "alice", "hello"); !strings.HasSuffix(line, " hello") {
		t.Fatalf("alice printed %q", line)
	}
	if err := alice.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-aliceDone:
		aliceDone <- err // for the cleanup
		if err != nil {
			t.Fatalf("alice's program after SIGINT: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("alice's program did not end after SIGINT")
	}
}
