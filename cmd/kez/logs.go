package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/files"
)

// logger returns the logger the SDK packages report to. A user's terminal
// shows no log lines by default: of what the packages log, only an event
// the user must act on, carried by a typed error (a shared file that
// changed on disk), becomes a sentence on standard error. --verbose prints
// every record, debug ones included, as it is.
func (e *env) logger(verbose bool) *slog.Logger {
	if verbose {
		return slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(sentenceHandler{e: e})
}

// sentenceHandler is the slog.Handler of a terminal without --verbose.
type sentenceHandler struct{ e *env }

func (h sentenceHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (h sentenceHandler) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		err, ok := a.Value.Any().(error)
		var changed *files.ChangedError
		if ok && errors.As(err, &changed) {
			fmt.Fprintln(h.e.stderr, capitalized(h.e.sentence(changed)+"."))
			return false
		}
		var own *chat.OwnChainRewrittenError
		if ok && errors.As(err, &own) {
			if !h.e.ownChainWarned.Swap(true) { // once per command
				fmt.Fprintln(h.e.stderr, ownChainSentence(own)+".")
			}
			return false
		}
		return true
	})
	return nil
}

func (h sentenceHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h sentenceHandler) WithGroup(string) slog.Handler      { return h }

// capitalized returns s with its first letter in upper case (sentences
// printed on their own line start with one; those after "kez CMD: " do
// not).
func capitalized(s string) string {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return s
	}
	return string(s[0]-'a'+'A') + s[1:]
}
