package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/devstack"
	kezid "github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/natsconn"
	"github.com/nats-io/nats.go"
)

// moduleRoot is the folder holding go.mod, where "go build" works.
func moduleRoot(t *testing.T) string {
	t.Helper()
	root, err := devstack.ModuleDir()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// parseEnv reads "export NAME=value" lines (values plain or single-quoted).
func parseEnv(t *testing.T, text string) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		kv, ok := strings.CutPrefix(line, "export ")
		name, value, ok2 := strings.Cut(kv, "=")
		if !ok || !ok2 {
			t.Fatalf("env line %q is not export NAME=value", line)
		}
		if strings.HasPrefix(value, "'") {
			value = strings.ReplaceAll(strings.Trim(value, "'"), `'\''`, "'")
		}
		env[name] = value
	}
	return env
}

var (
	binsOnce       sync.Once
	binsDir        string
	devBin, kezBin string
	binsErr        error
)

// binaries builds the dev stack and the kez CLI once for the package's
// tests.
func binaries(t *testing.T) (devstackBin, kez string) {
	t.Helper()
	binsOnce.Do(func() {
		if binsDir, binsErr = os.MkdirTemp("", "kez-devstack-bin"); binsErr != nil {
			return
		}
		devBin, kezBin = filepath.Join(binsDir, "devstack"), filepath.Join(binsDir, "kez")
		binsErr = devstack.Build(context.Background(), moduleRoot(t), binsDir, "./examples/devstack", "./cmd/kez")
	})
	if binsErr != nil {
		t.Fatal(binsErr)
	}
	return devBin, kezBin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binsDir != "" {
		os.RemoveAll(binsDir)
	}
	os.Exit(code)
}

// running is a dev stack binary started by startDevstack.
type running struct {
	cmd    *exec.Cmd
	env    map[string]string // DIR/env
	exited chan error
	stderr *bytes.Buffer
}

// startDevstack runs the dev stack binary on dir from an empty folder
// outside the module, with neither the go command on PATH nor the
// module's environment, and waits until it has written DIR/env.
func startDevstack(t *testing.T, dir string) *running {
	t.Helper()
	bin, _ := binaries(t)
	cmd := exec.Command(bin, "--dir", dir)
	cmd.Dir = t.TempDir()
	cmd.Env = []string{"HOME=" + t.TempDir(), "PATH=/nonexistent"}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	r := &running{cmd: cmd, exited: make(chan error, 1), stderr: &bytes.Buffer{}}
	cmd.Stderr = r.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })

	// Wait for the summary (the env file is written just before it).
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		r.exited <- cmd.Wait()
	}()
	var out strings.Builder
	timeout := time.After(5 * time.Minute)
wait:
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("devstack exited before it was ready: %v\nstdout:\n%s\nstderr:\n%s", <-r.exited, out.String(), r.stderr.String())
			}
			out.WriteString(line + "\n")
			if strings.Contains(line, "KEZ dev stack is ready") {
				break wait
			}
		case <-timeout:
			t.Fatalf("devstack not ready after 5 minutes:\n%s\n%s", out.String(), r.stderr.String())
		}
	}
	go func() { // keep draining
		for range lines {
		}
	}()

	envText, err := os.ReadFile(filepath.Join(dir, devstack.EnvFile))
	if err != nil {
		t.Fatal(err)
	}
	r.env = parseEnv(t, string(envText))
	for _, k := range []string{"NATS_URL", "KEZ_SERVER", "KEZ_SIG_SERVER", "KEZ_DOMAIN"} {
		if r.env[k] == "" {
			t.Fatalf("env lacks %s:\n%s", k, envText)
		}
	}
	if n := strings.Count(string(envText), "\n"); n != 4 {
		t.Errorf("env has %d lines, want 4:\n%s", n, envText)
	}
	return r
}

// stop sends SIGTERM and checks that the dev stack exits 0, freeing its
// ports and removing the env file.
func (r *running) stop(t *testing.T, dir string) {
	t.Helper()
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-r.exited:
		if err != nil {
			t.Fatalf("devstack exit after SIGTERM: %v\nstderr:\n%s", err, r.stderr.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("devstack did not exit after SIGTERM")
	}
	if _, err := os.Stat(filepath.Join(dir, devstack.EnvFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the env file is still there: %v", err)
	}
	for _, k := range []string{"NATS_URL", "KEZ_SERVER", "KEZ_SIG_SERVER"} {
		_, addr, _ := strings.Cut(r.env[k], "://")
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("something still listens on %s (%s)", addr, k)
		}
	}
}

// kez runs the kez CLI with exactly env (plus PATH and HOME) and returns
// its output, failing the test if it fails.
func kez(t *testing.T, env map[string]string, args ...string) string {
	t.Helper()
	_, bin := binaries(t)
	c := exec.Command(bin, args...)
	c.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	for k, v := range env {
		c.Env = append(c.Env, k+"="+v)
	}
	b, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("kez %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	return string(b)
}

// home is env with KEZ_HOME set to a fresh folder.
func home(t *testing.T, env map[string]string) map[string]string {
	out := maps.Clone(env)
	out["KEZ_HOME"] = filepath.Join(t.TempDir(), "home")
	return out
}

// A tester's session, with the binary run from outside the module: start
// the dev stack, use the kez CLI with it, log in to NATS, SIGTERM (exit
// 0, everything stopped); then start it again on the same folder: the
// same URLs, and the profiles the CLI saved in the first run work against
// the second without the env file.
func TestDevstackAsATesterUsesIt(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the dev stack and kez binaries")
	}
	dir := filepath.Join(t.TempDir(), "stack")
	first := startDevstack(t, dir)
	alice := home(t, first.env)
	bob := home(t, first.env)
	kez(t, alice, "init", "--yes")
	if got := kez(t, alice, "register", "alice"); !strings.Contains(got, "Claimed @alice@"+first.env["KEZ_DOMAIN"]) {
		t.Errorf("register:\n%s", got)
	}
	id, err := kezid.LoadIdentity(alice["KEZ_HOME"], nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := kez(t, alice, "whois", "alice"); !strings.Contains(got, id.PublicKey().String()) || !strings.Contains(got, id.PublicKey().Fingerprint()) {
		t.Errorf("whois:\n%s", got)
	}
	kez(t, bob, "init", "--yes")
	kez(t, bob, "register", "bob")
	kez(t, bob, "contacts", "add", "alice")

	// alice logs in to the dev stack's NATS through the callout.
	nc, err := natsconn.Connect(context.Background(), first.env["NATS_URL"], id, nats.NoReconnect())
	if err != nil {
		t.Fatalf("alice's NATS login: %v", err)
	}
	nc.Close()
	first.stop(t, dir)

	// The restart: the same URLs, and the users' saved profiles (with only
	// NATS_URL, as from a shell profile) keep working.
	second := startDevstack(t, dir)
	for k, v := range first.env {
		if second.env[k] != v {
			t.Errorf("%s changed across the restart: %s, then %s", k, v, second.env[k])
		}
	}
	profileOnly := func(u map[string]string) map[string]string {
		return map[string]string{"KEZ_HOME": u["KEZ_HOME"], "NATS_URL": first.env["NATS_URL"]}
	}
	kez(t, profileOnly(bob), "send", "alice", "after the restart")
	if got := kez(t, profileOnly(alice), "inbox", "--requests"); !strings.Contains(got, "after the restart") {
		t.Errorf("alice's inbox after the restart:\n%s", got)
	}
	second.stop(t, dir)
}

// A port kept from an earlier run that another program holds now: the dev
// stack says which, and how to get out of it, and exits 1.
func TestDevstackPortTaken(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the dev stack binary")
	}
	bin, _ := binaries(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	taken := ln.Addr().(*net.TCPAddr).Port
	dir := t.TempDir()
	ports := fmt.Sprintf(`{"nats": 0, "nats_monitor": 0, "sig_server": 0, "chat_server": %d}`, taken)
	if err := os.WriteFile(filepath.Join(dir, devstack.PortsFile), []byte(ports), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--dir", dir)
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("exit: %v\n%s", err, out)
	}
	for _, want := range []string{fmt.Sprintf("chat-server port %d", taken), "taken by another program", filepath.Join(dir, devstack.PortsFile), "delete"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the message lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(string(out), "\n") != 1 {
		t.Errorf("want one line:\n%s", out)
	}
}

func TestUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(nil, &out, &errb); code != 2 || !strings.Contains(errb.String(), "--dir") {
		t.Errorf("no --dir: exit %d\n%s", code, errb.String())
	}
	if code := run([]string{"--dir", t.TempDir(), "extra"}, &out, &errb); code != 2 {
		t.Errorf("extra argument: exit %d", code)
	}
}

// The dev stack, a development tool, runs NATS inside itself; what an
// operator or a user runs never links nats-server (only tests may).
func TestDoesNotLinkNATSServer(t *testing.T) {
	root := moduleRoot(t)
	for _, pkg := range []string{"./chatserver", "./cmd/kez-chat-server", "./cmd/kez-sig-server", "./cmd/kez"} {
		c := exec.Command("go", "list", "-deps", pkg)
		c.Dir = root
		b, err := c.Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		if strings.Contains(string(b), "github.com/nats-io/nats-server") {
			t.Errorf("%s links nats-server", pkg)
		}
	}
}
