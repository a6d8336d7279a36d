// Package ui is kez's full-screen terminal client ("kez ui"): a
// conversation list, a conversation pane, message requests, key-change
// banners and files, drawn with Bubble Tea over the SDK's public packages
// only (chat, files, kez). It holds no protocol code: everything it shows
// or does goes through chat.Client and files.Sharing.
package ui

import (
	"context"
	"io"
	"time"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/nats.go"
)

// Config is what the kez command hands the UI: where the state is, who
// the user is, and how to open the SDK's clients. The UI opens them
// itself, in the background, so that the conversation list is drawn from
// chat.db before any server answers.
type Config struct {
	Home   string        // the state folder (chat.db, shares.db)
	Me     kez.PublicKey // the person's key
	Handle string        // the user's own handle ("alice@kez.lat"), "" if none yet

	// OpenLocal opens the chat client without asking any server (history,
	// contacts), for reading while OpenChat has not succeeded yet.
	OpenLocal func(ctx context.Context) (*chat.Client, error)
	// OpenChat opens the chat client logged in to NATS. It may fail (NATS
	// down): the UI tries again, with a jittered backoff, until it quits.
	OpenChat func(ctx context.Context, n Notify) (*chat.Client, error)
	// OpenFiles opens file sharing over the online chat client's NATS
	// connection; the UI serves the user's shares while it is open.
	OpenFiles func(ctx context.Context, nc *nats.Conn) (*files.Sharing, error)

	// DownloadDir is where fetched files go unless the user types
	// another path ("kez ui" is started in it).
	DownloadDir string

	// Input and Output are the terminal; nil means stdin and stdout.
	Input  io.Reader
	Output io.Writer
	// Now is the clock (day separators, relative times); nil means
	// time.Now.
	Now func() time.Time

	// Explain words an error of the SDK as a sentence for the status line
	// (the kez command's wording); nil means err.Error().
	Explain func(error) string
}

// Notify is what the UI asks OpenChat to wire into the client it opens:
// each function is called from the SDK's goroutines and must not block.
type Notify struct {
	// Receipt: a delivery or read receipt was stored (a sent message's
	// state changed).
	Receipt func()
}
