package ui

import (
	"strconv"
	"strings"
	"time"

	"github.com/charmbracelet/x/ansi"
	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/kez"
)

// maxKept is how many messages of a conversation the pane keeps in
// memory: older pages are loaded as the user scrolls back, and what goes
// past this is dropped from the other end.
const maxKept = 4 * pageSize

// pane is the open conversation.
type pane struct {
	conv    conversation
	contact *chat.Contact // a person's, for the banner; nil otherwise
	// moved is the key a flagged contact's handle named when Ctrl+A was
	// refused (it no longer named the key shown): the banner shows its
	// number from then on, in place of the flag's first-seen key.
	moved   kez.PublicKey
	msgs    []*chat.Entry // oldest first
	sending []string      // typed and sent, not stored yet ("sending…")

	atStart      bool // msgs starts at the conversation's first message
	detached     bool // newer messages were dropped (scrolled far back)
	loadingOlder bool
	busy, dirty  bool // a reload runs / another was asked for
	scroll       int  // lines up from the bottom, as asked
	top          int  // lines up from the bottom, as last drawn

	// cache holds each message's drawn lines, by message and width.
	cache map[string][]string
}

func newPane(cv conversation) *pane {
	return &pane{conv: cv, cache: map[string][]string{}}
}

// shows reports whether e belongs to this conversation.
func (p *pane) shows(e *chat.Entry) bool {
	if p.conv.Group != "" {
		return e.Group == p.conv.Group
	}
	return e.Group == "" && e.Peer == p.conv.Peer
}

// add appends a message that just arrived.
func (p *pane) add(e *chat.Entry) {
	for _, o := range p.msgs[max(0, len(p.msgs)-pageSize):] {
		if o.ID == e.ID && o.From == e.From {
			return
		}
	}
	p.msgs = append(p.msgs, e)
	if len(p.msgs) > maxKept {
		p.msgs = append([]*chat.Entry(nil), p.msgs[len(p.msgs)-maxKept:]...)
		p.atStart = false
	}
}

// setNewest replaces the messages with the newest page.
func (p *pane) setNewest(es []*chat.Entry, refresh bool) {
	limit := pageSize
	if refresh {
		limit = max(pageSize, min(len(p.msgs), maxKept))
	}
	p.msgs = es
	p.atStart = len(es) < limit
	p.detached = false
	if !refresh {
		p.scroll = 0
	}
}

// addOlder puts an older page before the messages.
func (p *pane) addOlder(es []*chat.Entry) {
	if len(es) < pageSize {
		p.atStart = true
	}
	p.msgs = append(append([]*chat.Entry(nil), es...), p.msgs...)
	if len(p.msgs) > maxKept {
		p.msgs = p.msgs[:maxKept]
		p.detached = true
	}
}

// unsend removes text from the messages being sent.
func (p *pane) unsend(text string) {
	for i, s := range p.sending {
		if s == text {
			p.sending = append(p.sending[:i], p.sending[i+1:]...)
			return
		}
	}
}

// wantsOlder reports whether the scroll position reaches above the
// messages in memory.
func (p *pane) wantsOlder(m *model, width, height int) bool {
	if p.atStart {
		return false
	}
	n := 0
	for i := len(p.msgs) - 1; i >= 0; i-- {
		n += len(p.lines(p.msgs[i], width, m))
		if n > p.scroll+height {
			return false
		}
	}
	return true
}

// render draws the history in width×height cells: the messages from the
// bottom up, only as many as are visible (each message's lines are
// wrapped once per width and cached).
func (p *pane) render(m *model, width, height int) []string {
	var out []string // bottom first
	for i := len(p.sending) - 1; i >= 0; i-- {
		e := &chat.Entry{Body: []byte(p.sending[i]), SentAt: m.cfg.Now()}
		ls := p.wrap(m, e, width, "sending…")
		for j := len(ls) - 1; j >= 0; j-- {
			out = append(out, ls[j])
		}
	}
	need := p.scroll + height
	for i := len(p.msgs) - 1; i >= 0 && len(out) < need; i-- {
		var prev *chat.Entry
		if i > 0 {
			prev = p.msgs[i-1]
		}
		ls := p.lines(p.msgs[i], width, m)
		for j := len(ls) - 1; j >= 0; j-- {
			out = append(out, ls[j])
		}
		if prev == nil || !sameDay(prev.SentAt, p.msgs[i].SentAt) {
			if prev != nil || p.atStart {
				out = append(out, daySeparator(p.msgs[i].SentAt, m.cfg.Now(), width))
			}
		}
	}
	if p.atStart && len(out) < need {
		if len(p.msgs) == 0 && len(p.sending) == 0 {
			out = append(out, dim.Render("No messages yet."))
		}
	} else if len(out) < need {
		out = append(out, dim.Render("PgUp loads older messages…"))
	}
	// Scrolled past what is in memory: the top is shown while an older
	// page loads, and the request stands (the page then shows it).
	lo := max(0, min(p.scroll, len(out)-height))
	p.top = lo
	if p.atStart || p.detached {
		p.scroll = lo
	}
	hi := min(len(out), lo+height)
	vis := make([]string, height) // top rows left blank when short
	for i, j := lo, height-1; i < hi; i, j = i+1, j-1 {
		vis[j] = out[i]
	}
	return vis
}

// lines returns e's drawn lines, cached.
func (p *pane) lines(e *chat.Entry, width int, m *model) []string {
	state := m.stateWord(e)
	key := e.ID.String() + e.From.String() + "|" + strconv.Itoa(width) + "|" + state
	if ls, ok := p.cache[key]; ok {
		return ls
	}
	ls := p.wrap(m, e, width, state)
	if len(p.cache) > 4*maxKept {
		clear(p.cache)
	}
	p.cache[key] = ls
	return ls
}

// wrap draws e: "HH:MM name: text", further lines indented, the state
// of a sent message after it.
func (p *pane) wrap(m *model, e *chat.Entry, width int, state string) []string {
	name := m.senderName(e, p)
	body := name + ": " + clean(e.Text())
	text := ansi.Wrap(body, max(1, width-6), " ")
	var ls []string
	for i, l := range strings.Split(text, "\n") {
		if i == 0 {
			hl := strings.Replace(l, name+":", nameStyle(e).Render(name)+":", 1)
			ls = append(ls, dim.Render(e.SentAt.In(time.Local).Format("15:04"))+" "+hl)
		} else {
			ls = append(ls, "      "+l)
		}
	}
	if state != "" {
		last := ls[len(ls)-1]
		if ansi.StringWidth(last)+2+ansi.StringWidth(state) <= width {
			ls[len(ls)-1] = last + "  " + stateStyle(state).Render(state)
		} else {
			ls = append(ls, "      "+stateStyle(state).Render(state))
		}
	}
	return ls
}

// stateWord is a sent message's state in words ("" for a received one).
func (m *model) stateWord(e *chat.Entry) string {
	if e.Incoming {
		return ""
	}
	switch {
	case e.State == chat.StateFailed:
		return "✗ failed"
	case e.State == chat.StatePending:
		if m.conn1 != "● online" {
			return "sent, waiting for NATS"
		}
		return "sending…"
	case !readAt(e).IsZero():
		return "✓✓ read"
	case !e.DeliveredAt.IsZero():
		return "✓✓ delivered"
	}
	return "✓ sent"
}

// senderName names who wrote e: the handle's name part.
func (m *model) senderName(e *chat.Entry, p *pane) string {
	if !e.Incoming {
		if m.cfg.Handle != "" {
			return localPart(m.cfg.Handle)
		}
		return "you"
	}
	if e.PeerHandle != "" {
		return shortHandle(cleanLine(e.PeerHandle), m.cfg.Handle)
	}
	return shortKey(e.From)
}

// shortHandle is h without its domain when that is the user's own
// domain; a handle of any other domain is drawn in full, so that
// "bob@evil.example" is never the "bob" of the user's servers.
func shortHandle(h, own string) string {
	h = strings.TrimPrefix(h, "@")
	_, ownDomain, _ := strings.Cut(strings.TrimPrefix(own, "@"), "@")
	if name, domain, ok := strings.Cut(h, "@"); ok && ownDomain != "" && strings.EqualFold(domain, ownDomain) {
		return name
	}
	return h
}

// localPart is a handle's name before "@".
func localPart(h string) string {
	name, _, _ := strings.Cut(strings.TrimPrefix(h, "@"), "@")
	return name
}

func sameDay(a, b time.Time) bool {
	ay, am, ad := a.In(time.Local).Date()
	by, bm, bd := b.In(time.Local).Date()
	return ay == by && am == bm && ad == bd
}

// daySeparator is "── Mon 7 Dec ──" centred.
func daySeparator(t, now time.Time, width int) string {
	label := " " + t.In(time.Local).Format("Mon 2 Jan") + " "
	if t.Year() != now.Year() {
		label = " " + t.In(time.Local).Format("Mon 2 Jan 2006") + " "
	}
	side := max(2, (width-ansi.StringWidth(label))/2)
	return dim.Render(strings.Repeat("─", side) + label + strings.Repeat("─", side))
}
