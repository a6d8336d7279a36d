package bench

// History that follows: the time to link a device to a person whose
// primary device holds a history, from the approval until the new device
// has imported all of it, through chat.Client at both ends.

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/kez"
)

// historyBodySize is the size of each message of the history.
const historyBodySize = sessionTargetSize

// historyTarget: linking a device with its history takes at most this
// share of the time the same messages took to send one by one.
const historyTarget = 1.0

// openClient opens a chat.Client of the stack for a device of person
// (dev nil: the person's primary, holding its identity) with state folder
// dir.
func (s *Stack) openClient(ctx context.Context, dir string, person *User, dev *kez.Identity) (*chat.Client, error) {
	cc := client.Config{Identity: person.Identity, Home: dir, ServerURL: s.ServerURL, NATSURL: s.NATSURL,
		SigServerURL: s.SigServerURL, Domain: s.Domain, Logger: slog.New(slog.DiscardHandler)}
	if dev != nil {
		cc.Identity, cc.Device, cc.Person = nil, dev, person.Key
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return chat.Open(ctx, chat.Config{Client: cc})
}

// historyMessage returns the text of message i: historyBodySize bytes
// of words drawn from a small vocabulary by a generator seeded with i, so
// that it compresses about as chat text does, not as a run of one letter.
func historyMessage(i int) string {
	words := [...]string{"the", "a", "meeting", "tomorrow", "at", "noon", "see", "you", "there", "ok", "thanks",
		"sounds", "good", "I", "will", "send", "file", "later", "tonight", "can", "we", "talk", "about", "it", "yes", "no"}
	r := rand.New(rand.NewPCG(uint64(i), 0x6b657a))
	var b strings.Builder
	fmt.Fprintf(&b, "%d:", i)
	for b.Len() < historyBodySize {
		b.WriteByte(' ')
		b.WriteString(words[r.IntN(len(words))])
	}
	return b.String()[:historyBodySize]
}

// measureHistory makes cfg.HistoryMessages messages of history between
// person p's primary device and contact c, each message through
// chat.Client (half each way, timed: the baseline), then links a new
// device to p and times it from the approval ("kez devices add": the
// request fetched by its code, the add_device link registered at the
// chat-server and appended at the sig-server, then chat.Client.SendHistory)
// until the new device, which logs in as soon as the link is there (as
// "kez link" does), has imported everything. The device is revoked at
// the end, so that runs against one stack do not pile up devices.
func measureHistory(ctx context.Context, st *Stack, cfg Config, p, c *User) (_ []Figure, err error) {
	f, rctx, err := newClientFleet(ctx, "kez-bench-history-")
	if err != nil {
		return nil, err
	}
	defer f.close()
	pc, err := f.open(ctx, st, p, p)
	if err != nil {
		return nil, err
	}
	cc, err := f.open(ctx, st, c, c)
	if err != nil {
		return nil, err
	}
	ph, ch := p.Name+"@"+st.Domain, c.Name+"@"+st.Domain
	if _, err := pc.AddContact(ctx, ch); err != nil {
		return nil, fmt.Errorf("adding the history's contact: %w", err)
	}
	if _, err := cc.AddContact(ctx, ph); err != nil {
		return nil, fmt.Errorf("the history's contact adding its person: %w", err)
	}
	f.receive(rctx, pc)
	f.receive(rctx, cc)
	n := cfg.HistoryMessages
	half := n / 2
	made, err := f.send(ctx, cc, ph, half, half)
	if err != nil {
		return nil, fmt.Errorf("the history's received half: %w", err)
	}
	d, err := f.send(ctx, pc, ch, n-half, n-half)
	if err != nil {
		return nil, fmt.Errorf("the history's sent half: %w", err)
	}
	made += d
	if hist, err := pc.History(ctx, ch, 0); err != nil || len(hist) != n {
		return nil, fmt.Errorf("the primary holds %d messages of history, want %d (%v)", len(hist), n, err)
	}

	// "kez link" on the new device, untimed: it waits for the approval.
	dev, _, err := kez.NewIdentity()
	if err != nil {
		return nil, err
	}
	req, err := st.RequestLink(ctx, dev, fmt.Sprintf("history-%d", time.Now().Unix()))
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	if _, err := st.ApproveLink(ctx, p, req.Code()); err != nil {
		return nil, err
	}
	approved := time.Since(t0)
	defer func() {
		if _, rerr := st.RevokeDevice(ctx, p, dev.PublicKey()); rerr != nil && err == nil {
			err = fmt.Errorf("revoking the linked device afterwards: %w", rerr)
		}
	}()
	// The approving device sends while the new one logs in and receives.
	type sent struct {
		stats chat.HistoryStats
		err   error
	}
	done := make(chan sent, 1)
	go func() {
		stats, err := pc.SendHistory(ctx, dev.PublicKey(), chat.HistoryOptions{MaxWait: 2 * time.Minute})
		done <- sent{stats, err}
	}()
	dc, err := f.open(ctx, st, p, &User{Name: "linked", Identity: dev, Key: dev.PublicKey()})
	if err != nil {
		<-done
		return nil, err
	}
	var out sent
	for out.stats.Chunks == 0 {
		if _, err := dc.Sync(ctx); err != nil {
			<-done
			return nil, fmt.Errorf("the new device receiving: %w", err)
		}
		select {
		case out = <-done:
			if out.err != nil {
				return nil, fmt.Errorf("sending the history: %w", out.err)
			}
		case <-time.After(10 * time.Millisecond): // the inbox is polled, as "kez inbox" does
		}
	}
	// Every chunk is in the stream: one more Sync takes the rest.
	if _, err := dc.Sync(ctx); err != nil {
		return nil, fmt.Errorf("the new device receiving: %w", err)
	}
	linked := time.Since(t0)
	hist, err := dc.History(ctx, ch, 0)
	if err != nil {
		return nil, fmt.Errorf("the new device's history: %w", err)
	}
	if len(hist) != n || out.stats.Messages != n {
		return nil, fmt.Errorf("the new device imported %d messages of %d (%d sent)", len(hist), n, out.stats.Messages)
	}
	name := fmt.Sprintf("link a device, %d messages of history", n)
	plain := n * historyBodySize
	return []Figure{
		{Group: "devices", Name: name, Unit: "s", Value: linked.Seconds(),
			Baseline: fmt.Sprintf("the same %d messages sent one by one", n), Base: made.Seconds(), Goal: MaxRatio, Target: historyTarget,
			Note: fmt.Sprintf("chat.Client at both ends: person %s's primary device holds %d messages (%d B texts, half sent to a contact, half received) and the contact; "+
				"timed from the approval (\"kez devices add\": the link request fetched by its code and checked, the add_device link registered at the chat-server and appended at the sig-server: %.0f ms) "+
				"through chat.Client.SendHistory (%d chunks of sync-history sealed in the session of the two devices, through the broker, %d waits for the new device's prekey or inbox room; returned after %.0f ms) "+
				"until the new device, logged in once the link was there and taking its inbox (Sync) as it arrives, has imported the whole history and the contact. "+
				"Baseline: the time the same messages took to make, each sent through chat.Client (SendAsync) and stored by its receiver",
				p.Name, n, historyBodySize, ms(approved), out.stats.Chunks, out.stats.Waits, ms(out.stats.Elapsed))},
		{Group: "devices", Name: name + ", transfer", Unit: "KiB", Value: float64(out.stats.Bytes) / 1024,
			Baseline: "the messages' texts", Base: float64(plain) / 1024,
			Note: fmt.Sprintf("the bodies of the %d sync-history messages (contacts with their pinned chains, then every message with its metadata, deflated; docs/spec/chat.md §9); "+
				"each is sealed in a session envelope on the wire. Baseline: the %d texts alone (%d B each, words of a small vocabulary)", out.stats.Chunks, n, historyBodySize)},
	}, nil
}

// ms returns d in ms.
func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }
