package netlab

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// stopTimeout is how long a process may take to stop after SIGTERM
// before it is killed.
const stopTimeout = 10 * time.Second

// maxKept bounds the output a [Proc] keeps for [Proc.Output].
const maxKept = 1 << 20

// Command returns a command that runs program name with args inside the
// namespace ("ip netns exec", which execs the program: its process ID is
// the program's). It runs in a process group of its own and is killed
// when the test binary dies. Set Env, Dir or Stdin before starting it.
func (n *Namespace) Command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = stopTimeout
	// Kept for the lab's cleanup: a command started just before its test
	// ends may not have entered the namespace yet, and "ip netns pids"
	// would miss it.
	n.lab.mu.Lock()
	n.lab.cmds = append(n.lab.cmds, cmd)
	n.lab.mu.Unlock()
	return cmd
}

// Proc is a program running inside a namespace; see [Namespace.Start].
type Proc struct {
	Name string // the name the test log knows it by
	cmd  *exec.Cmd
	out  *logWriter
	done chan struct{}
	err  error // once done is closed
}

// Start runs program bin with args inside the namespace (see
// [Namespace.Command]), its output written to the test log line by line,
// prefixed with name, and kept for [Proc.Output]. t.Cleanup stops it.
func (n *Namespace) Start(t testing.TB, name, bin string, args ...string) *Proc {
	t.Helper()
	return StartCmd(t, name, n.Command(bin, args...))
}

// StartCmd starts cmd (from [Namespace.Command], its Env or Dir set) as
// [Namespace.Start] does.
func StartCmd(t testing.TB, name string, cmd *exec.Cmd) *Proc {
	t.Helper()
	p := &Proc{Name: name, cmd: cmd, out: &logWriter{t: t, prefix: name}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("netlab: starting %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		p.out.flush()
		close(p.done)
	}()
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Errorf("netlab: %v", err)
		}
	})
	return p
}

// PID is the process ID of the program.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Done is closed when the program has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is the program's exit status once Done is closed.
func (p *Proc) Err() error {
	<-p.done
	return p.err
}

// Output returns what the program wrote so far (its last MiB).
func (p *Proc) Output() string { return p.out.kept() }

// WaitLine waits until the program has written a whole line containing
// s and returns the first such line. It fails when the program exits
// without writing one, or when ctx ends.
func (p *Proc) WaitLine(ctx context.Context, s string) (string, error) {
	for {
		next := p.out.lineWait()
		lines := strings.Split(p.out.kept(), "\n")
		for _, line := range lines[:len(lines)-1] { // the last is unfinished
			if strings.Contains(line, s) {
				return line, nil
			}
		}
		select {
		case <-next:
		case <-p.done:
			if line, ok := p.doneLine(s); ok {
				return line, nil
			}
			return "", fmt.Errorf("%s exited (%v) without writing %q", p.Name, p.err, s)
		case <-ctx.Done():
			return "", fmt.Errorf("%s has not written %q: %w", p.Name, s, ctx.Err())
		}
	}
}

// doneLine looks for s in the output of an exited program, whose last
// line may lack its newline.
func (p *Proc) doneLine(s string) (string, bool) {
	for _, line := range strings.Split(p.out.kept(), "\n") {
		if strings.Contains(line, s) {
			return line, true
		}
	}
	return "", false
}

// Stop sends SIGTERM to the program's process group and waits for it to
// exit; after 10 s it kills the group. Stopping an exited program does
// nothing. The error says only that it had to be killed.
func (p *Proc) Stop() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	t := time.NewTimer(stopTimeout)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
	}
	p.Kill()
	return fmt.Errorf("%s did not stop within %s of SIGTERM and was killed", p.Name, stopTimeout)
}

// Kill ends the program's process group at once (SIGKILL), as a crash or
// a power cut would, and waits for it.
func (p *Proc) Kill() {
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// logWriter writes a process's output to the test log, a line at a time,
// and keeps its tail.
type logWriter struct {
	t      testing.TB
	prefix string

	mu      sync.Mutex
	line    []byte        // an unfinished line
	all     bytes.Buffer  // everything, trimmed to maxKept
	newLine chan struct{} // closed (and replaced) when a line ends
}

func (w *logWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.all.Write(b)
	if w.all.Len() > 2*maxKept {
		tail := append([]byte(nil), w.all.Bytes()[w.all.Len()-maxKept:]...)
		w.all.Reset()
		w.all.Write(tail)
	}
	w.line = append(w.line, b...)
	for {
		i := bytes.IndexByte(w.line, '\n')
		if i < 0 {
			break
		}
		w.t.Logf("[%s] %s", w.prefix, w.line[:i])
		w.line = w.line[i+1:]
		if w.newLine != nil {
			close(w.newLine)
			w.newLine = nil
		}
	}
	return len(b), nil
}

func (w *logWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.line) > 0 {
		w.t.Logf("[%s] %s", w.prefix, w.line)
		w.line = nil
	}
}

// lineWait returns a channel closed when the next line ends.
func (w *logWriter) lineWait() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.newLine == nil {
		w.newLine = make(chan struct{})
	}
	return w.newLine
}

func (w *logWriter) kept() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.all.String()
	if len(s) > maxKept {
		s = s[len(s)-maxKept:]
	}
	return strings.Clone(s)
}
