package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/servercmd"
	"github.com/kez-lat/kez-chat/internal/testenv/testlog"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// start runs the program in-process and returns its base URL and a stop
// function that cancels it (as SIGTERM does) and returns run's error.
func start(t *testing.T, args []string, env map[string]string) (string, func() error, *testlog.Buffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs := &testlog.Buffer{}
	addrc := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, args, func(k string) string { return env[k] }, io.Discard, logs, func(a net.Addr) { addrc <- a })
	}()
	var url string
	select {
	case a := <-addrc:
		url = "http://" + a.String()
	case err := <-done:
		cancel()
		t.Fatalf("run: %v\n%s", err, logs)
	}
	var once sync.Once
	var stopErr error
	stop := func() error {
		once.Do(func() { cancel(); stopErr = <-done })
		return stopErr
	}
	t.Cleanup(func() { stop() })
	return url, stop, logs
}

func TestRunServesChainsAndStops(t *testing.T) {
	db := filepath.Join(t.TempDir(), "sig.db")
	url, stop, logs := start(t, []string{"--listen", "127.0.0.1:0", "--log-format", "json"}, map[string]string{"KEZ_SIG_DB": db})

	for _, p := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(url + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", p, resp.StatusCode)
		}
	}
	id, err := kez.FromWords("abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon art")
	if err != nil {
		t.Fatal(err)
	}
	l, err := sigchain.NewLink(id, nil, sigchain.TypeEldest, sigchain.EldestBody(id.PublicKey(), id.EncryptionKey(0).PublicKey(), 0, "alice@kez.lat"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c := &sigchain.Client{BaseURL: url}
	if err := c.Append(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(m), `kez_http_requests_total{code="201",method="POST",route="POST /v1/chains/{key}/links"} 1`) ||
		!strings.Contains(string(m), "go_goroutines") {
		t.Fatalf("metrics:\n%s", m)
	}
	if err := stop(); err != nil {
		t.Fatalf("graceful stop: %v", err)
	}
	if !strings.Contains(logs.String(), `"msg":"shutting down"`) {
		t.Fatalf("logs: %s", logs)
	}

	// The database file (from the environment twin) keeps the chain.
	url2, _, _ := start(t, []string{"--listen", "127.0.0.1:0", "--db", db}, nil)
	st, err := (&sigchain.Client{BaseURL: url2}).FetchVerified(context.Background(), id.PublicKey(), nil)
	if err != nil || st.Handle() != "alice@kez.lat" {
		t.Fatalf("after restart: %v %v", st, err)
	}
}

func TestRunUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"--log-format", "xml"}, {"--log-level", "loud"}, {"extra"}, {"--nope"}, {"--drain-timeout", "-1s"}} {
		var out bytes.Buffer
		err := run(context.Background(), args, func(string) string { return "" }, &out, &out, nil)
		var u servercmd.UsageError
		if !errors.As(err, &u) {
			t.Errorf("%v: got %v, want a usage error", args, err)
		}
	}
}

// TestMain lets TestSIGTERM run this test binary as the real program.
func TestMain(m *testing.M) {
	if os.Getenv("KEZ_SIG_SERVER_RUN_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// startProc runs the program as a child process on db and returns its
// address and its remaining stderr.
func startProc(t *testing.T, db string) (string, *exec.Cmd, io.Reader) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "--listen", "127.0.0.1:0", "--db", db)
	cmd.Env = append(os.Environ(), "KEZ_SIG_SERVER_RUN_MAIN=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	br := bufio.NewReader(stderr)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("the server never logged its address: %v", err)
		}
		if _, after, ok := strings.Cut(strings.TrimSpace(line), "msg=listening addr="); ok {
			return after, cmd, br
		}
	}
}

func TestSIGTERM(t *testing.T) {
	addr, cmd, stderr := startProc(t, filepath.Join(t.TempDir(), "sig.db"))
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(stderr)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, rest)
	}
	if !strings.Contains(string(rest), "shutting down") {
		t.Fatalf("no shutdown log: %s", rest)
	}
}

// TestKillKeepsAcknowledgedLinks kills the server with SIGKILL right after
// acknowledged appends; a new process on the same file has them all.
func TestKillKeepsAcknowledgedLinks(t *testing.T) {
	ctx := context.Background()
	db := filepath.Join(t.TempDir(), "sig.db")
	addr, cmd, _ := startProc(t, db)
	id, err := kez.FromWords("zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo vote")
	if err != nil {
		t.Fatal(err)
	}
	c := &sigchain.Client{BaseURL: "http://" + addr}
	var st *sigchain.State
	body := sigchain.EldestBody(id.PublicKey(), id.EncryptionKey(0).PublicKey(), 0, "")
	typ := sigchain.TypeEldest
	for i := range 5 {
		l, err := sigchain.NewLink(id, st, typ, body, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Append(ctx, l); err != nil {
			t.Fatal(err)
		}
		if st, err = st.Extend([]*sigchain.Link{l}); err != nil {
			t.Fatal(err)
		}
		typ, body = sigchain.TypeSetHandle, sigchain.SetHandleBody(fmt.Sprintf("u%d@kez.lat", i))
	}
	cmd.Process.Kill()
	cmd.Wait()
	addr2, _, _ := startProc(t, db)
	got, err := (&sigchain.Client{BaseURL: "http://" + addr2}).FetchVerified(ctx, id.PublicKey(), st)
	if err != nil || got.Pin() != st.Pin() {
		t.Fatalf("after SIGKILL and restart: %v %v", got, err)
	}
}
