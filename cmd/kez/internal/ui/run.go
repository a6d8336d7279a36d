package ui

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/internal/lifecycle"
)

// Run shows the UI until the user quits or ctx ends. It draws the
// conversation list from chat.db first, then opens the clients in the
// background (see Config). The terminal is restored when it returns,
// after a panic too.
func Run(ctx context.Context, cfg Config) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Explain == nil {
		cfg.Explain = func(err error) string { return err.Error() }
	}
	m := newModel(ctx, &cfg)
	// The first frame: the list as chat.db holds it, before any client.
	if convs, err := readConversations(ctx, cfg.Home); err == nil {
		m.setConversations(convs)
	}
	// 120 frames a second: a keystroke reaches the screen within about
	// 8 ms instead of the default 60 fps's 16 (BenchmarkUIKeystroke);
	// Bubble Tea draws only when the view changed, so an idle UI costs
	// nothing more.
	opts := []tea.ProgramOption{tea.WithContext(ctx), tea.WithFPS(120)}
	if cfg.Input != nil {
		opts = append(opts, tea.WithInput(cfg.Input))
	}
	if cfg.Output != nil {
		opts = append(opts, tea.WithOutput(cfg.Output))
	}
	p := tea.NewProgram(m, opts...)
	go openClients(ctx, &cfg, p)
	_, err := p.Run()
	cancel()
	m.shutdown()
	if errors.Is(err, tea.ErrProgramKilled) && ctx.Err() != nil {
		return nil // a signal or the caller ended it
	}
	if errors.Is(err, tea.ErrInterrupted) {
		return nil
	}
	return err
}

// sender is the part of tea.Program the background work uses.
type sender interface{ Send(tea.Msg) }

// Messages from the background.
type (
	localMsg struct {
		c   *chat.Client
		err error
	}
	onlineMsg  struct{ c *chat.Client }
	offlineMsg struct {
		err     error
		attempt int
	}
	runEndedMsg struct{ err error }
	entryMsg    struct{ e *chat.Entry }
	receiptMsg  struct{}
)

// openClients opens the local client, then the online one (trying again
// with a jittered backoff while it fails), receives messages with it and
// opens file sharing over its connection.
func openClients(ctx context.Context, cfg *Config, p sender) {
	if cfg.OpenLocal != nil {
		c, err := cfg.OpenLocal(ctx)
		p.Send(localMsg{c, err})
	}
	if cfg.OpenChat == nil {
		return
	}
	n := Notify{Receipt: func() { p.Send(receiptMsg{}) }}
	var c *chat.Client
	for attempt := 1; ; attempt++ {
		var err error
		if c, err = cfg.OpenChat(ctx, n); err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		p.Send(offlineMsg{err, attempt})
		if !lifecycle.Sleep(ctx, backoff(attempt)) {
			return
		}
	}
	p.Send(onlineMsg{c})
	go func() {
		err := c.Run(ctx, func(e *chat.Entry) { p.Send(entryMsg{e}) })
		p.Send(runEndedMsg{err})
	}()
	if cfg.OpenFiles != nil {
		s, err := cfg.OpenFiles(ctx, c.Conn())
		p.Send(sharingMsg{s, err})
	}
}

// backoff is the wait before the next attempt: 1 s doubling up to 30 s,
// each within ±25 % so that clients that lost the same server do not
// come back at once.
func backoff(attempt int) time.Duration {
	d := time.Second << min(attempt-1, 5)
	d = min(d, 30*time.Second)
	return d*3/4 + rand.N(d/2)
}
