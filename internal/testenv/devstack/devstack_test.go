package devstack

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
)

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222": "nats://127.0.0.1:4222",
		"kez.test":              "kez.test",
		"":                      "''",
		"a b":                   "'a b'",
		"it's":                  `'it'\''s'`,
		"$(rm -rf /)":           "'$(rm -rf /)'",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
	s := &Stack{NATSURL: "nats://127.0.0.1:1", ServerURL: "http://127.0.0.1:2", SigServerURL: "http://127.0.0.1:3", Domain: "kez.test"}
	want := "export NATS_URL=nats://127.0.0.1:1\nexport KEZ_SERVER=http://127.0.0.1:2\nexport KEZ_SIG_SERVER=http://127.0.0.1:3\nexport KEZ_DOMAIN=kez.test\n"
	if got := s.Env(); got != want {
		t.Errorf("Env:\n%s\nwant:\n%s", got, want)
	}
}

// With a given nats-server binary (the one natstest builds), Start brings
// everything up, writes the env file, and Close takes it all down.
func TestStartAndCloseWithBinary(t *testing.T) {
	dir := t.TempDir()
	st, err := Start(context.Background(), Config{Dir: dir, NATSServer: natstest.ServerBinary(t), Domain: "dev.example"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	env, err := os.ReadFile(filepath.Join(dir, EnvFile))
	if err != nil || string(env) != st.Env() || !strings.Contains(string(env), "KEZ_DOMAIN=dev.example") {
		t.Fatalf("env file: %v\n%s", err, env)
	}
	pid := st.NATSPID()
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		t.Fatalf("NATS pid %d not running", pid)
	}
	if err := st.Ready(); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	if syscall.Kill(pid, 0) == nil {
		t.Fatal("NATS still runs after Close")
	}
	if _, err := os.Stat(filepath.Join(dir, EnvFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("env file left behind")
	}
	select {
	case <-st.NATSExited():
	default:
		t.Fatal("NATSExited not closed")
	}
}

func TestStartErrors(t *testing.T) {
	if _, err := Start(context.Background(), Config{}); err == nil || !strings.Contains(err.Error(), "Config.Dir") {
		t.Errorf("no dir: %v", err)
	}
	dir := t.TempDir()
	if _, err := Start(context.Background(), Config{Dir: dir, NATSServer: filepath.Join(dir, "no-such-binary")}); err == nil || !strings.Contains(err.Error(), "starting NATS") {
		t.Errorf("missing binary: %v", err)
	}
	// A binary that exits at once: its output is in the error.
	script := filepath.Join(dir, "fake-nats")
	os.WriteFile(script, []byte("#!/bin/sh\necho 'no config for you' >&2\nexit 3\n"), 0o700)
	_, err := Start(context.Background(), Config{Dir: dir, NATSServer: script})
	if err == nil || !strings.Contains(err.Error(), "exited while starting") || !strings.Contains(err.Error(), "no config for you") {
		t.Errorf("exiting binary: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, EnvFile)); !errors.Is(err, os.ErrNotExist) {
		t.Error("a failed start wrote the env file")
	}
}
