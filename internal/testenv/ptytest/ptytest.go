package ptytest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/charmbracelet/x/vt"
)

// ErrUnsupported is returned by [Start] and [Available] where this
// package cannot open a pseudo-terminal.
var ErrUnsupported = errors.New("ptytest: no pseudo-terminals on this system")

// ErrEnded is returned by a wait whose condition did not hold when the
// command's output ended (the command and everything holding its
// terminal exited).
var ErrEnded = errors.New("ptytest: the terminal's output ended")

// Options size the terminal and choose whether to keep a screen model.
type Options struct {
	Rows, Cols int  // the window size; 0 means 24 rows, 80 columns
	Screen     bool // feed the output to a VT screen model (WaitScreen)
}

// Term is a command running in a pseudo-terminal. Its methods are safe
// for concurrent use.
type Term struct {
	cmd     *exec.Cmd
	master  *os.File
	started time.Time
	exited  chan struct{} // closed when the command has been waited for
	waitErr error         // the command's exit, once exited is closed
	ended   chan struct{} // closed when the output stream has ended

	mu     sync.Mutex
	out    []byte
	at     time.Time     // when the newest bytes were read
	grown  chan struct{} // closed and replaced whenever out grows or ends
	done   bool          // the output ended
	screen *vt.Emulator  // nil without Options.Screen

	closeOnce sync.Once
}

// Start starts cmd in a new pseudo-terminal of the given size, as the
// session leader with the terminal as its controlling terminal, its
// stdin, stdout and stderr on the terminal's slave side. cmd.Env and
// cmd.Dir are the caller's; TERM is not set for it. The returned Term
// must be closed ([Term.Close]); closing kills the command if it still
// runs.
func Start(cmd *exec.Cmd, o Options) (*Term, error) {
	if o.Rows <= 0 {
		o.Rows = 24
	}
	if o.Cols <= 0 {
		o.Cols = 80
	}
	master, slave, err := openPty()
	if err != nil {
		return nil, err
	}
	if err := setSize(master, o.Rows, o.Cols); err != nil {
		master.Close()
		slave.Close()
		return nil, err
	}
	t := &Term{
		cmd:    cmd,
		master: master,
		exited: make(chan struct{}),
		ended:  make(chan struct{}),
		grown:  make(chan struct{}),
	}
	if o.Screen {
		t.screen = vt.NewEmulator(o.Cols, o.Rows)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = sessionAttr()
	t.started = time.Now()
	err = cmd.Start()
	// The child holds its own copy of the slave: the master reads EIO
	// once every holder has closed it, which is how the output ends.
	slave.Close()
	if err != nil {
		master.Close()
		return nil, fmt.Errorf("ptytest: starting %s: %w", cmd.Path, err)
	}
	go t.read()
	go func() {
		t.waitErr = cmd.Wait()
		close(t.exited)
	}()
	if t.screen != nil {
		// A real terminal answers queries; a program may wait for them.
		go t.answer()
	}
	return t, nil
}

func (t *Term) read() {
	buf := make([]byte, 32*1024)
	for {
		n, err := t.master.Read(buf)
		now := time.Now()
		t.mu.Lock()
		if n > 0 {
			t.out = append(t.out, buf[:n]...)
			t.at = now
			if t.screen != nil {
				t.screen.Write(buf[:n])
			}
		}
		if err != nil {
			t.done = true
		}
		close(t.grown)
		t.grown = make(chan struct{})
		t.mu.Unlock()
		if err != nil {
			close(t.ended)
			return
		}
	}
}

// answer copies the screen model's answers to the master until Close.
// It keeps reading after a failed write, so that the model never blocks
// on an answer nobody takes.
func (t *Term) answer() {
	buf := make([]byte, 1024)
	for {
		n, err := t.screen.Read(buf)
		if n > 0 {
			t.master.Write(buf[:n])
		}
		if err != nil {
			return
		}
	}
}

// Started is when the command was started (just before the exec).
func (t *Term) Started() time.Time { return t.started }

// Pid is the command's process id.
func (t *Term) Pid() int { return t.cmd.Process.Pid }

// Write writes p to the terminal, as keys typed by its user.
func (t *Term) Write(p []byte) (int, error) { return t.master.Write(p) }

// WriteString writes s to the terminal, as keys typed by its user.
func (t *Term) WriteString(s string) (int, error) { return t.master.WriteString(s) }

// Output returns a copy of everything the command wrote so far.
func (t *Term) Output() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]byte(nil), t.out...)
}

// Screen is what the screen model shows, for a [Term.WaitScreen]
// condition. It is valid only during the call of the condition.
type Screen struct{ e *vt.Emulator }

// Lines returns the screen's rows, trailing blanks trimmed.
func (s Screen) Lines() []string {
	lines := strings.Split(s.e.String(), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	return lines
}

// Contains reports whether text is shown within one row of the screen.
func (s Screen) Contains(text string) bool {
	for _, l := range s.Lines() {
		if strings.Contains(l, text) {
			return true
		}
	}
	return false
}

// Cursor returns the cursor's column and row (from 0).
func (s Screen) Cursor() (x, y int) {
	p := s.e.CursorPosition()
	return p.X, p.Y
}

// AltScreen reports whether the alternate screen is active.
func (s Screen) AltScreen() bool { return s.e.IsAltScreen() }

// WaitOutput waits until cond holds for everything the command has
// written so far, testing it again each time the output grows. It
// returns the time the last bytes before cond held were read (the start
// time if cond held at once on empty output). It fails with ctx's error,
// or [ErrEnded] when the output ended first.
func (t *Term) WaitOutput(ctx context.Context, cond func(out []byte) bool) (time.Time, error) {
	return t.wait(ctx, func() bool { return cond(t.out) })
}

// WaitScreen is [Term.WaitOutput] with a condition on the screen model.
// It panics unless the Term was started with [Options.Screen].
func (t *Term) WaitScreen(ctx context.Context, cond func(Screen) bool) (time.Time, error) {
	if t.screen == nil {
		panic("ptytest: WaitScreen without Options.Screen")
	}
	return t.wait(ctx, func() bool { return cond(Screen{t.screen}) })
}

// ScreenText returns the screen model's rows joined by newlines.
func (t *Term) ScreenText() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.screen == nil {
		return ""
	}
	return strings.Join(Screen{t.screen}.Lines(), "\n")
}

func (t *Term) wait(ctx context.Context, cond func() bool) (time.Time, error) {
	for {
		t.mu.Lock()
		if cond() {
			at := t.at
			if at.IsZero() {
				at = t.started
			}
			t.mu.Unlock()
			return at, nil
		}
		grown, done := t.grown, t.done
		t.mu.Unlock()
		if done {
			return time.Time{}, ErrEnded
		}
		select {
		case <-grown:
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
}

// Resize sets the terminal's window size (the command gets SIGWINCH).
func (t *Term) Resize(rows, cols int) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := setSize(t.master, rows, cols); err != nil {
		return err
	}
	if t.screen != nil {
		t.screen.Resize(cols, rows)
	}
	return nil
}

// Exited is closed when the command has exited.
func (t *Term) Exited() <-chan struct{} { return t.exited }

// Wait waits for the command to exit, or ctx to end, and returns its
// exit error (an *exec.ExitError for a non-zero status).
func (t *Term) Wait(ctx context.Context) error {
	select {
	case <-t.exited:
		return t.waitErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close kills the command unless it has exited, waits for it, and closes
// the terminal. It returns the command's exit error.
func (t *Term) Close() error {
	t.closeOnce.Do(func() {
		select {
		case <-t.exited:
		default:
			t.cmd.Process.Kill()
			<-t.exited
		}
		t.master.Close()
		<-t.ended
		if t.screen != nil {
			// Ends answer's read; the emulator's own Close would race
			// with it.
			if pw, ok := t.screen.InputPipe().(*io.PipeWriter); ok {
				pw.Close()
			}
		}
	})
	return t.waitErr
}
