package systemtest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/nats-io/nats.go"
)

// TestRollingRestart is the rolling upgrade of docs/operators.md §10: a
// 3-node NATS cluster, two kez-chat-server and two kez-sig-server
// processes (every store in JetStream) behind load balancers. Under load
// (clients sending to each other, logins in a loop, new users
// registering), each of the four replicas in turn is stopped with SIGTERM,
// started again and waited for: no login is refused, no registration
// fails, and no acknowledged message is lost or shown twice.
func TestRollingRestart(t *testing.T) {
	// Not parallel: a 3-process cluster and four server processes.
	sys := newNATSSystem(t, sysOptions{cluster: true, jetstream: true, ackWait: 2 * time.Second})
	bins := kezBinaries(t)
	seed, err := sys.sigKey.Seed()
	if err != nil {
		t.Fatal(err)
	}
	sigKey := filepath.Join(sys.dir, "sig-nats.nk")
	if err := os.WriteFile(sigKey, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	off := func(flags ...string) []string {
		var args []string
		for _, f := range flags {
			args = append(args, "--"+f, "off")
		}
		return args
	}
	sigFront, chatFront := &lb{}, &lb{}
	sigFrontSrv := httptest.NewServer(sigFront)
	t.Cleanup(sigFrontSrv.Close)
	chatFrontSrv := httptest.NewServer(chatFront)
	t.Cleanup(chatFrontSrv.Close)
	sys.sigURL, sys.chatURL = sigFrontSrv.URL, chatFrontSrv.URL

	sigArgs := append([]string{"--store", "jetstream", "--replicas", "3", "--nats", sys.natsURL, "--nats-key", sigKey, "--no-log"},
		off("appends-per-ip", "chains-per-ip", "appends-per-key", "reads-per-ip", "prekeys-per-ip", "prekeys-per-key",
			"prekey-reads-per-ip", "link-requests-per-ip", "link-reads-per-ip", "device-reads-per-ip",
			"group-appends-per-ip", "group-reads-per-ip")...)
	chatArgs := append([]string{"--store", "jetstream", "--replicas", "3", "--nats", sys.natsURL, "--keys", sys.keysDir,
		"--domain", domain, "--sig-server", sys.sigURL},
		off("claims-per-ip", "claims-per-key", "reads-per-ip", "devices-per-ip", "devices-per-key")...)
	var all []*replica
	for i := range 2 {
		r := &replica{name: fmt.Sprintf("sig%d", i), bin: filepath.Join(bins, "kez-sig-server"), args: sigArgs, dir: sys.dir, logs: sys.logs}
		sigFront.add(r)
		all = append(all, r)
		r.start(t)
	}
	for i := range 2 {
		r := &replica{name: fmt.Sprintf("chat%d", i), bin: filepath.Join(bins, "kez-chat-server"), args: chatArgs, dir: sys.dir, logs: sys.logs}
		chatFront.add(r)
		all = append(all, r)
		r.start(t)
	}

	regulars := sys.registerMany(t, "regular", 4) // log in and out in a loop
	var (
		stop                  = make(chan struct{})
		loops                 sync.WaitGroup
		logins, registrations atomic.Int64
		failMu                sync.Mutex
		failures              []string
	)
	fail := func(format string, a ...any) {
		failMu.Lock()
		defer failMu.Unlock()
		failures = append(failures, time.Now().Format("15:04:05.000 ")+fmt.Sprintf(format, a...))
	}
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	for _, u := range regulars {
		loops.Go(func() {
			for !stopped() {
				ctx, cancel := contextFor(10 * time.Second)
				nc, err := chat.Connect(ctx, sys.natsURL, u.id, nats.NoReconnect())
				cancel()
				if err != nil {
					fail("%s's login: %v", u.name, err)
					continue
				}
				nc.Close()
				logins.Add(1)
			}
		})
	}
	loops.Go(func() {
		for i := 0; !stopped(); i++ {
			if _, err := sys.tryRegister(fmt.Sprintf("newcomer%d", i)); err != nil {
				fail("registering newcomer%d: %v", i, err)
				continue
			}
			registrations.Add(1)
		}
	})

	var restarts []string
	chaos := func() {
		for _, r := range all {
			began := time.Now()
			if err := r.stop(); err != nil {
				fail("%s's exit after SIGTERM: %v", r.name, err)
			}
			r.start(t)
			restarts = append(restarts, fmt.Sprintf("%s %s", r.name, time.Since(began).Round(time.Millisecond)))
		}
	}
	sc := loadScale{clients: 10, messages: 40, contacts: 2, cutEvery: 100 * time.Millisecond}
	f := runLoad(t, sys, sc, 21, chaos)
	close(stop)
	loops.Wait()
	t.Logf("rolling restart (%s) under load: %d logins, %d registrations meanwhile; %s", strings.Join(restarts, ", "), logins.Load(), registrations.Load(), f)
	if len(failures) > 0 {
		t.Fatalf("%d failures during the rolling restart:\n%s", len(failures), strings.Join(failures, "\n"))
	}
	if logins.Load() == 0 || registrations.Load() == 0 {
		t.Fatalf("%d logins and %d registrations during the run: no load", logins.Load(), registrations.Load())
	}
}

// replica is a KEZ server program running as its own process, which a
// test stops with SIGTERM and starts again on another port.
type replica struct {
	name, bin, dir string
	args           []string
	logs           *logBuffer // every run's stderr, each line prefixed with name

	mu     sync.Mutex
	cmd    *exec.Cmd
	addr   string     // host:port of its HTTP API while ready; "" otherwise
	exited chan error // the process's exit status
}

// start starts the process, waits until its /readyz answers 200 and puts
// it in its load balancer's rotation; it is killed in t.Cleanup if still
// running then.
func (r *replica) start(t testing.TB) {
	t.Helper()
	cmd := exec.Command(r.bin, append([]string{"--listen", "127.0.0.1:0", "--log-level", "debug"}, r.args...)...)
	cmd.Dir = r.dir
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", r.name, err)
	}
	exited := make(chan error, 1)
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintf(r.logs, "%s| %s\n", r.name, line)
			if _, addr, ok := strings.Cut(line, "msg=listening addr="); ok {
				addrc <- strings.Fields(addr)[0]
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.Process.Kill() == nil {
			<-exited
		}
	})
	var addr string
	select {
	case addr = <-addrc:
	case err := <-exited:
		t.Fatalf("%s exited before listening: %v", r.name, err)
	case <-time.After(60 * time.Second):
		t.Fatalf("%s never listened", r.name)
	}
	eventually(t, 90*time.Second, r.name+" ready", func() bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	r.mu.Lock()
	r.cmd, r.addr, r.exited = cmd, addr, exited
	r.mu.Unlock()
}

// stop sends SIGTERM and waits for the process to exit, returning its
// exit error. The load balancer keeps sending to it until it stops
// listening (connections refused: it tries another replica).
func (r *replica) stop() error {
	r.mu.Lock()
	cmd, exited := r.cmd, r.exited
	r.mu.Unlock()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	var err error
	select {
	case err = <-exited:
	case <-time.After(60 * time.Second):
		err = errors.New("still running 60 s after SIGTERM")
	}
	r.mu.Lock()
	r.addr = ""
	r.mu.Unlock()
	return err
}

// address returns where the replica listens, or "" while it does not.
func (r *replica) address() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.addr
}

// lb is an operator's load balancer in front of replicas: round robin
// over those running, and a request whose connection fails (refused, or
// closed before an answer) is sent to the next one, as a proxy's
// "next upstream on error" does. Claims and chain appends are safe to
// send twice.
type lb struct {
	mu       sync.Mutex
	replicas []*replica
	rr       int
}

func (b *lb) add(r *replica) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.replicas = append(b.replicas, r)
}

// next returns the address of the next running replica, or "".
func (b *lb) next() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	for range b.replicas {
		r := b.replicas[b.rr%len(b.replicas)]
		b.rr++
		if a := r.address(); a != "" {
			return a
		}
	}
	return ""
}

var lbClient = &http.Client{Timeout: 30 * time.Second}

func (b *lb) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var last error
	for range 20 {
		addr := b.next()
		if addr == "" {
			last = errors.New("no replica is running")
			time.Sleep(50 * time.Millisecond) // a replica is on its way back
			continue
		}
		req, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+addr+r.URL.RequestURI(), bytes.NewReader(body))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		req.Header = r.Header.Clone()
		resp, err := lbClient.Do(req)
		if err != nil {
			last = err
			continue
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
		return
	}
	http.Error(w, fmt.Sprintf(`{"error":%q}`, "load balancer: "+last.Error()), http.StatusBadGateway)
}
