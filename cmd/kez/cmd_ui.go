package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/cmd/kez/internal/ui"
	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/libp2p/go-libp2p/gologshim"
	"github.com/nats-io/nats.go"
)

// uiLogName is the log of the UI's session in the state folder, and
// uiLogMax how large it grows at most.
const (
	uiLogName = "ui.log"
	uiLogMax  = 4 << 20
)

func init() {
	register(&command{
		name:    "ui",
		args:    "[--listen ADDRS] [--nats URL] [--server URL] [--sig-server URL] [--home DIR] [--verbose]",
		summary: "the full-screen client: conversations, requests, files (bare \"kez\" on a terminal opens it)",
		help: `
Opens the full-screen client in this terminal: your conversations on the
left (unread counts, the last message, ✓ for a verified contact, ! for a
flagged one) with message requests in their own section, the open
conversation on the right with its history, delivery and read states, and
a box to write in. A contact whose key changed or whose sigchain was
rewritten gets a red banner with the safety number to compare, and
nothing is sent to them until you accept the change (Ctrl+A).

While it is open it receives your messages and serves your shared files,
as "kez serve" does; the status line says whether NATS is connected. When
NATS cannot be reached it keeps trying and shows what is already on this
machine.

Keys: Tab switches between the list and the message box, Enter opens a
conversation or sends, Alt+Enter (or Ctrl+J) starts a new line, Esc goes
back to the list, PgUp/PgDn scroll; in the list n starts a conversation,
a and b accept or block a request, f shows the selected contact's files,
s yours, ? the help, q quits; Ctrl+C quits anywhere.

"kez" with no command, on a terminal, opens it when the state folder holds
your keys. The SDK's log lines go to ui.log in the state folder (never to
the screen); --verbose writes debug lines there too.

--listen (env KEZ_P2P_LISTEN) sets the libp2p listen addresses of file
sharing, comma-separated multiaddrs, as for "kez serve".`,
		flags: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			var cf chatFlags
			var listen string
			cf.declare(fs, true)
			fs.StringVar(&listen, "listen", "", "libp2p listen addresses, comma-separated (env KEZ_P2P_LISTEN)")
			return func(ctx context.Context, args []string) error {
				if len(args) > 0 {
					return usagef("ui takes no arguments, got %q", args)
				}
				return runUI(ctx, e, cf, listen)
			}
		},
	})
}

func runUI(ctx context.Context, e *env, cf chatFlags, listen string) error {
	if !e.isTerminal {
		return usagef("ui needs a terminal (standard input and output); use \"kez inbox\", \"kez send\" or \"kez chat\" in scripts")
	}
	// The keys first, on the terminal (a passphrase is asked here).
	acct, err := e.loadAccount(cf.home)
	if err != nil {
		return err
	}
	if _, err := e.natsURLFor(cf); err != nil {
		return err
	}
	logf, err := openUILog(acct.home)
	if err != nil {
		return err
	}
	defer logf.Close()
	// From here on nothing may write to the terminal but the UI, and
	// nothing may prompt on it.
	logw := &cappedWriter{w: logf, left: uiLogMax}
	e.stderr = logw
	e.isTerminal = false
	// What libraries log on their own (libp2p writes to standard error
	// unless told otherwise) goes there too.
	level := slog.LevelWarn
	if cf.verbose {
		level = slog.LevelDebug
	}
	h := slog.NewTextHandler(logw, &slog.HandlerOptions{Level: level})
	gologshim.SetDefaultHandler(h)
	slog.SetDefault(slog.New(h))
	log.SetOutput(logw)

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGHUP)
	defer stop()
	dir, _ := os.Getwd()
	var mu sync.Mutex // e's settled servers are written by the openers, read by Explain
	cfg := ui.Config{
		Home:        acct.home,
		Me:          acct.person,
		Handle:      acct.prof.handleFor(acct.person),
		DownloadDir: dir,
		OpenLocal: func(ctx context.Context) (*chat.Client, error) {
			mu.Lock()
			defer mu.Unlock()
			return e.openChatAs(ctx, cf, acct, false, false)
		},
		OpenChat: func(ctx context.Context, n ui.Notify) (*chat.Client, error) {
			mu.Lock()
			defer mu.Unlock()
			return e.openChatAs(ctx, cf, acct, true, true, func(c *chat.Config) {
				c.OnContactDevice = func(chat.ContactDevice) {}
				if n.Receipt != nil {
					uiReceipts(c, n.Receipt)
				}
			})
		},
		OpenFiles: func(ctx context.Context, nc *nats.Conn) (*files.Sharing, error) {
			mu.Lock()
			defer mu.Unlock()
			s, _, err := e.openSharingAs(ctx, cf, acct, true, nc, listen)
			return s, err
		},
		Explain: func(err error) string {
			mu.Lock()
			defer mu.Unlock()
			return e.sentence(err)
		},
	}
	return ui.Run(ctx, cfg)
}

// uiReceipts has the client tell the UI of each receipt it stored.
func uiReceipts(c *chat.Config, told func()) {
	c.OnReceipt = func(chat.ReceiptEvent) { told() }
}

// homeHoldsKeys reports whether the state folder (KEZ_HOME or the default)
// holds an identity or a device key: bare "kez" then opens the UI.
func (e *env) homeHoldsKeys() bool {
	home, err := e.home("")
	if err != nil {
		return false
	}
	id, _ := kez.HasIdentity(home)
	dev, _ := kez.HasDevice(home)
	return id || dev
}

// openUILog empties and opens the UI's log in home, readable by the user
// only. A symlink there is refused, not followed: emptying the log must
// never empty another file. A log left readable by others is made 0600.
func openUILog(home string) (*os.File, error) {
	path := filepath.Join(home, uiLogName)
	isLink := func() bool {
		st, err := os.Lstat(path)
		return err == nil && st.Mode()&fs.ModeSymlink != 0
	}
	linkErr := fmt.Errorf("%s is a symbolic link, which kez ui does not follow: remove it and start again", path)
	if isLink() {
		return nil, linkErr
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|uiLogFlags, 0o600)
	if err != nil {
		if isLink() { // planted since (O_NOFOLLOW refused it)
			return nil, linkErr
		}
		return nil, err
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file: remove it and start again", path)
	}
	if err == nil {
		err = f.Chmod(0o600)
	}
	if err == nil {
		err = f.Truncate(0)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// cappedWriter writes to w until left bytes were written, then drops
// what comes (a log that cannot fill the disk).
type cappedWriter struct {
	mu   sync.Mutex
	w    io.Writer
	left int64
}

func (c *cappedWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.left <= 0 {
		return len(p), nil
	}
	n := int64(len(p))
	if n > c.left {
		p = p[:c.left]
	}
	c.left -= int64(len(p))
	c.w.Write(p)
	return int(n), nil
}
