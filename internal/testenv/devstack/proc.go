package devstack

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// proc is one server of the stack running as a child process, its output
// appended to a log file.
type proc struct {
	name    string // for people: "NATS", "chat-server", "sig-server"
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when the process has exited
	err     error         // its exit status, once done is closed
}

// startProc starts bin with args in its own process group, with the
// environment of this process plus env, appending its output to logPath.
func startProc(name, bin string, args, env []string, logPath string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("devstack: %s log: %w", name, err)
	}
	defer logf.Close() // the child has its own copy
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	ownProcessGroup(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("devstack: starting %s (%s): %w", name, bin, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// pid is the process ID.
func (p *proc) pid() int { return p.cmd.Process.Pid }

// stop asks the process to stop, and kills its whole process group if it
// is not gone within stopTimeout.
func (p *proc) stop() error {
	select {
	case <-p.done:
		return nil // already gone
	default:
	}
	if err := terminate(p.cmd.Process); err != nil {
		killGroup(p.cmd.Process)
	}
	t := time.NewTimer(stopTimeout)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
	}
	killGroup(p.cmd.Process)
	<-p.done
	return fmt.Errorf("devstack: %s did not stop within %s and was killed", p.name, stopTimeout)
}

// kill ends the process group at once, as a crash would, and waits for
// the process to exit.
func (p *proc) kill() {
	killGroup(p.cmd.Process)
	<-p.done
}

// waitHTTP polls url until it answers 200, the process exits or ctx ends.
// Polling is the only way to learn when another process is ready.
func (p *proc) waitHTTP(ctx context.Context, url string) error {
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("devstack: %s exited while starting (%v); the end of %s:\n%s", p.name, p.err, filepath.Base(p.logPath), tailFile(p.logPath, 4000))
		case <-ctx.Done():
			return fmt.Errorf("devstack: %s is not ready at %s: %w; the end of %s:\n%s", p.name, url, ctx.Err(), filepath.Base(p.logPath), tailFile(p.logPath, 4000))
		case <-tick.C:
		}
	}
}

func tailFile(path string, n int) string {
	b, _ := os.ReadFile(path)
	if len(b) > n {
		return "…" + string(b[len(b)-n:])
	}
	return string(b)
}
