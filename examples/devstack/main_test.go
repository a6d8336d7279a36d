package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/devstack"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/natsconn"
	"github.com/nats-io/nats.go"
)

// moduleRoot is the folder holding go.mod, where "go tool nats-server"
// and "go build ./cmd/kez" work.
func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || len(bytes.TrimSpace(out)) == 0 {
		t.Fatalf("go env GOMOD: %v", err)
	}
	return filepath.Dir(string(bytes.TrimSpace(out)))
}

func goBuild(t *testing.T, root, out, pkg string) string {
	t.Helper()
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
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

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

// A tester's session: start the dev stack binary, wait for DIR/env, use
// the kez CLI with it, log in to NATS, then SIGTERM: exit 0 and NATS gone.
func TestDevstackAsATesterUsesIt(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries and, on a cold cache, nats-server")
	}
	root := moduleRoot(t)
	bin := t.TempDir()
	devBin := goBuild(t, root, filepath.Join(bin, "devstack"), "./examples/devstack")
	kezBin := goBuild(t, root, filepath.Join(bin, "kez"), "./cmd/kez")

	dir := filepath.Join(t.TempDir(), "stack")
	cmd := exec.Command(devBin, "--dir", dir)
	cmd.Dir = root // go tool nats-server needs the module
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	t.Cleanup(func() {
		cmd.Process.Kill()
		if pid := (&devstack.Stack{Dir: dir}).NATSPID(); pid > 0 && alive(pid) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})

	// Wait for the summary (the env file is written just before it).
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	var out strings.Builder
	timeout := time.After(10 * time.Minute)
wait:
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("devstack exited before it was ready: %v\nstdout:\n%s\nstderr:\n%s", <-exited, out.String(), stderr.String())
			}
			out.WriteString(line + "\n")
			if strings.Contains(line, "KEZ dev stack is ready") {
				break wait
			}
		case <-timeout:
			t.Fatalf("devstack not ready after 10 minutes:\n%s\n%s", out.String(), stderr.String())
		}
	}
	go func() { // keep draining
		for line := range lines {
			out.WriteString(line + "\n")
		}
	}()

	envText, err := os.ReadFile(filepath.Join(dir, devstack.EnvFile))
	if err != nil {
		t.Fatal(err)
	}
	env := parseEnv(t, string(envText))
	for _, k := range []string{"NATS_URL", "KEZ_SERVER", "KEZ_SIG_SERVER", "KEZ_DOMAIN"} {
		if env[k] == "" {
			t.Fatalf("env lacks %s:\n%s", k, envText)
		}
	}
	if n := strings.Count(string(envText), "\n"); n != 4 {
		t.Errorf("env has %d lines, want 4:\n%s", n, envText)
	}

	home := filepath.Join(t.TempDir(), "alice")
	kezRun := func(args ...string) string {
		t.Helper()
		c := exec.Command(kezBin, args...)
		c.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "KEZ_HOME=" + home}
		for k, v := range env {
			c.Env = append(c.Env, k+"="+v)
		}
		b, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("kez %s: %v\n%s", strings.Join(args, " "), err, b)
		}
		return string(b)
	}
	kezRun("init", "--yes")
	if got := kezRun("register", "alice"); !strings.Contains(got, "Claimed @alice@"+env["KEZ_DOMAIN"]) {
		t.Errorf("register:\n%s", got)
	}
	id, err := kez.LoadIdentity(home, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := kezRun("whois", "alice"); !strings.Contains(got, id.PublicKey().String()) || !strings.Contains(got, id.PublicKey().Fingerprint()) {
		t.Errorf("whois:\n%s", got)
	}

	// alice logs in to the dev stack's NATS through the callout.
	nc, err := natsconn.Connect(context.Background(), env["NATS_URL"], id, nats.NoReconnect())
	if err != nil {
		t.Fatalf("alice's NATS login: %v", err)
	}
	nc.Close()

	pid := (&devstack.Stack{Dir: dir}).NATSPID()
	if pid <= 0 || !alive(pid) {
		t.Fatalf("NATS pid %d is not running", pid)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("devstack exit after SIGTERM: %v\nstderr:\n%s", err, stderr.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("devstack did not exit after SIGTERM")
	}
	if alive(pid) {
		t.Fatalf("NATS (pid %d) is still running after the dev stack exited", pid)
	}
	if _, err := os.Stat(filepath.Join(dir, devstack.EnvFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the env file is still there: %v", err)
	}
	if c, err := net.DialTimeout("tcp", strings.TrimPrefix(env["NATS_URL"], "nats://"), time.Second); err == nil {
		c.Close()
		t.Error("something still listens on the NATS port")
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

// The dev stack execs nats-server; it never links it (only tests may).
func TestDoesNotLinkNATSServer(t *testing.T) {
	root := moduleRoot(t)
	for _, pkg := range []string{"./examples/devstack", "./internal/testenv/devstack", "./chatserver", "./cmd/kez-chat-server"} {
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
