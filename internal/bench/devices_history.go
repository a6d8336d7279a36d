package bench

// History that follows: the time to link a device to a person whose
// primary device holds a history, from the approval until the new device
// has imported all of it, through chat.Client at both ends.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/kez"
)

// historyBodySize is the size of each message of the history.
const historyBodySize = sessionTargetSize

// openClient opens a chat.Client of the stack for a device of person
// (dev nil: the person's primary, holding its identity) in a state folder
// under dir.
func (s *Stack) openClient(ctx context.Context, dir string, person *User, dev *kez.Identity) (*chat.Client, error) {
	cc := client.Config{Identity: person.Identity, Home: dir, ServerURL: s.ServerURL, NATSURL: s.NATSURL,
		SigServerURL: s.SigServerURL, Domain: s.Domain, Logger: slog.New(slog.NewTextHandler(cond(os.Getenv("KBDEBUG") != "", io.Writer(os.Stderr), io.Discard), nil)).With("dir", filepath.Base(dir))}
	if dev != nil {
		cc.Identity, cc.Device, cc.Person = nil, dev, person.Key
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return chat.Open(ctx, chat.Config{Client: cc})
}

// historyMessage returns the text of message i of the history.
func historyMessage(i int) string {
	s := fmt.Sprintf("kez-bench history message %d ", i)
	return s + strings.Repeat("h", max(0, historyBodySize-len(s)))
}

// makeHistory makes n messages of history between the primary device of
// p (pc) and the primary of contact c (cc), half each way, through the
// chat.Clients as people make it: each adds the other as a contact, c
// sends its half and p its own, and pc receives c's half.
func makeHistory(ctx context.Context, pc, cc *chat.Client, p, c *User, domain string, n int) error {
	ph, ch := p.Name+"@"+domain, c.Name+"@"+domain
	if _, err := pc.AddContact(ctx, ch); err != nil {
		return fmt.Errorf("adding the history's contact: %w", err)
	}
	if _, err := cc.AddContact(ctx, ph); err != nil {
		return fmt.Errorf("the history's contact adding its person: %w", err)
	}
	send := func(from *chat.Client, to string, first, count int) error {
		pending := make([]*chat.Pending, 0, count)
		for i := first; i < first+count; i++ {
			pd, err := from.SendAsync(ctx, to, historyMessage(i))
			if err != nil {
				return err
			}
			pending = append(pending, pd)
		}
		for _, pd := range pending {
			if _, err := pd.Wait(ctx); err != nil {
				return err
			}
		}
		return nil
	}
	half := n / 2
	if err := send(cc, ph, 0, half); err != nil {
		return fmt.Errorf("sending the history's received half: %w", err)
	}
	if err := send(pc, ch, half, n-half); err != nil {
		return fmt.Errorf("sending the history's sent half: %w", err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for got := 0; got < half; {
		k, err := pc.Sync(ctx)
		if err != nil {
			return fmt.Errorf("receiving the history's received half: %w", err)
		}
		if got += k; got < half && time.Now().After(deadline) {
			return fmt.Errorf("received %d of the history's %d messages within 2 minutes", got, half)
		}
	}
	hist, err := pc.History(ctx, ch, 0)
	if err != nil {
		return err
	}
	if len(hist) != n {
		return fmt.Errorf("the primary holds %d messages of history, want %d", len(hist), n)
	}
	return nil
}

// measureHistory makes cfg.HistoryMessages messages of history between
// person p and contact c, then links a new device to p and times it from
// the approval until the new device has imported everything.
func measureHistory(ctx context.Context, st *Stack, cfg Config, p, c *User) ([]Figure, error) {
	dir, err := os.MkdirTemp("", "kez-bench-history-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	pc, err := st.openClient(ctx, filepath.Join(dir, "primary"), p, nil)
	if err != nil {
		return nil, err
	}
	defer pc.Close()
	cc, err := st.openClient(ctx, filepath.Join(dir, "contact"), c, nil)
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	t0 := time.Now()
	if err := makeHistory(ctx, pc, cc, p, c, st.Domain, cfg.HistoryMessages); err != nil {
		return nil, err
	}
	made := time.Since(t0)
	return []Figure{{Group: "devices", Name: fmt.Sprintf("link a device, %d messages of history", cfg.HistoryMessages), Unit: "s",
		Skipped: fmt.Sprintf("the history transfer is not there yet (history of %d made in %.1f s)", cfg.HistoryMessages, made.Seconds())}}, nil
}
