package main

// The transparency log on the command line: the account's log pins
// (KEZ_HOME/log.db), which every chain read of someone else's is checked
// against, and the WARNING "kez inbox" and "kez whois" print while a
// split view is recorded (docs/spec/chat.md §11).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/translog"
	"github.com/kez-lat/kez-chat/translog/sqlitepins"
)

// accountLog returns the transparency log monitor of the account at
// home, its pins in home/log.db; the pins are closed when the command
// ends (env.closeAll). Without a state folder yet, its pins are kept in
// memory for the command.
func (e *env) accountLog(home string) (*translog.Monitor, error) {
	if _, err := os.Stat(home); errors.Is(err, fs.ErrNotExist) {
		return &translog.Monitor{HTTPClient: httpClient, Logger: e.logger(false)}, nil
	}
	pins, err := sqlitepins.Open(filepath.Join(home, sqlitepins.FileName))
	if err != nil {
		return nil, fmt.Errorf("the log pins in %s cannot be opened: %w", home, err)
	}
	e.closers = append(e.closers, pins)
	return &translog.Monitor{Pins: pins, HTTPClient: httpClient, Logger: e.logger(false)}, nil
}

// closeAll closes what the command opened for its whole run.
func (e *env) closeAll() {
	for _, c := range e.closers {
		c.Close()
	}
	e.closers = nil
}

// warnSplitViews prints, on stderr, the WARNING of the split views
// recorded in the chat database of the account (home flag homeFlag), if
// any. What cannot be read is not a warning: it says nothing.
func (e *env) warnSplitViews(ctx context.Context, homeFlag string) {
	home, err := e.home(homeFlag)
	if err != nil {
		return
	}
	svs, err := chat.RecordedSplitViews(ctx, home)
	if err == nil {
		printSplitViews(e.stderr, svs)
	}
}

// printSplitViews prints the WARNING paragraph of split views, if any.
func printSplitViews(w io.Writer, svs []chat.SplitView) {
	if len(svs) == 0 {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "WARNING: a sig-server was caught showing different histories to you and to a contact (%d split view(s)). "+
		"The keys and devices it serves may not be the ones their owners published: compare fingerprints in person or by voice before you trust anyone whose sigchain it holds, "+
		"and tell its operator. The two signed checkpoints of each are the evidence:\n", len(svs))
	for _, s := range svs {
		fmt.Fprintf(&b, "  %s\n", s)
		for _, n := range [][]byte{s.Ours, s.Theirs} {
			if len(n) > 0 {
				fmt.Fprintf(&b, "    %s\n", strings.ReplaceAll(strings.TrimRight(string(n), "\n"), "\n", "\n    "))
			}
		}
	}
	io.WriteString(w, b.String())
}
