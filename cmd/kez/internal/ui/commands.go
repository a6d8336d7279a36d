package ui

// The SDK work of the UI: each function returns a tea.Cmd that runs off
// the UI goroutine, and its result comes back as a message.

import (
	"context"
	"errors"
	"strings"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/kez"
)

// sdkTimeout bounds one SDK call the user waits for.
const sdkTimeout = 30 * time.Second

type (
	listMsg struct {
		convs []conversation
		err   error
	}
	// paneMsg: a conversation was opened (or refreshed): its newest page.
	paneMsg struct {
		conv    conversation
		entries []*chat.Entry
		contact *chat.Contact
		refresh bool
		err     error
	}
	// pageMsg: an older page of the open conversation.
	pageMsg struct {
		conv    conversation
		entries []*chat.Entry
		err     error
	}
	// storedMsg: SendAsync stored the message (or refused it).
	storedMsg struct {
		conv conversation
		text string
		p    *chat.Pending
		err  error
	}
	// sentMsg: the stream answered a send.
	sentMsg struct {
		conv conversation
		err  error
	}
	acceptedMsg struct {
		conv conversation
		ct   *chat.Contact
		err  error
	}
	blockedMsg struct {
		conv conversation
		err  error
	}
	addedMsg struct {
		ct    *chat.Contact
		known bool // a contact already: opened, not added
		err   error
	}
	markedMsg struct{ err error }
)

// call runs f with a timeout under the UI's context.
func (m *model) call(f func(ctx context.Context) tea.Msg) tea.Cmd {
	parent := m.ctx
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(parent, sdkTimeout)
		defer cancel()
		return f(ctx)
	}
}

// refreshList asks for the conversation list; at most one such call is
// in flight (a flood of messages makes one more, not one each).
func (m *model) refreshList() tea.Cmd {
	c := m.reader()
	if c == nil {
		return nil
	}
	if m.listBusy {
		m.listDirty = true
		return nil
	}
	m.listBusy = true
	return m.call(func(ctx context.Context) tea.Msg {
		cs, err := conversations(ctx, c)
		return listMsg{cs, err}
	})
}

func (m *model) listDone(msg listMsg) tea.Cmd {
	m.listBusy = false
	if msg.err != nil {
		m.sayErr("Cannot list your conversations", msg.err)
	} else {
		m.setConversations(msg.convs)
		if m.pane != nil {
			for _, c := range append(m.convs, m.requests...) {
				if sameConv(c, m.pane.conv) || (m.pane.conv.Request && !c.Request && c.Peer == m.pane.conv.Peer && c.Group == "") {
					m.pane.conv = c
				}
			}
		}
	}
	if m.listDirty {
		m.listDirty = false
		return m.refreshList()
	}
	return nil
}

// open shows a conversation: its newest page, and the contact (for the
// banner of a flagged one).
func (m *model) open(cv conversation) tea.Cmd {
	c := m.reader()
	if c == nil {
		m.say("Your messages are not open yet")
		return nil
	}
	m.pane = newPane(cv)
	m.compose.Reset()
	m.layout()
	return tea.Batch(m.loadPane(c, cv, false), m.check(cv))
}

func (m *model) loadPane(c *chat.Client, cv conversation, refresh bool) tea.Cmd {
	limit := pageSize
	if refresh && m.pane != nil {
		limit = max(pageSize, min(len(m.pane.msgs), maxKept))
	}
	return m.call(func(ctx context.Context) tea.Msg {
		es, err := page(ctx, c, pageQuery{Peer: cv.Peer, Group: cv.Group, Limit: limit})
		msg := paneMsg{conv: cv, entries: es, refresh: refresh, err: err}
		if err == nil && cv.Group == "" && !cv.Request && cv.Handle != "" {
			msg.contact, _ = c.Contact(ctx, cv.Handle)
		}
		return msg
	})
}

// checkMsg: a contact's chain was checked against their servers.
type checkMsg struct {
	conv conversation
	ct   *chat.Contact
	err  error
}

// check asks the contact's servers whether the open conversation's key
// and chain still hold (as kez chat does), so that a change shows as the
// banner before anything is typed.
func (m *model) check(cv conversation) tea.Cmd {
	c := m.client
	if c == nil || cv.Group != "" || cv.Request || cv.Handle == "" {
		return nil
	}
	return m.call(func(ctx context.Context) tea.Msg {
		ct, err := c.CheckContact(ctx, cv.Handle)
		return checkMsg{cv, ct, err}
	})
}

// refreshPane reloads the open conversation (a receipt, a send): one
// reload in flight at most.
func (m *model) refreshPane() tea.Cmd {
	c := m.reader()
	if m.pane == nil || c == nil {
		return nil
	}
	if m.pane.busy {
		m.pane.dirty = true
		return nil
	}
	m.pane.busy = true
	return m.loadPane(c, m.pane.conv, true)
}

// scroll moves the history a page up (+1) or down (-1), loading an older
// page when the top is reached.
func (m *model) scroll(dir int) tea.Cmd {
	p := m.pane
	if p == nil {
		return nil
	}
	h := max(1, m.historyHeight()-1)
	if dir > 0 {
		p.scroll += h
		if p.wantsOlder(m, m.paneWidth(), m.historyHeight()) {
			return m.loadOlder()
		}
		return nil
	}
	p.scroll = max(0, min(p.scroll, p.top)-h)
	if p.scroll == 0 && p.detached {
		return m.refreshPane()
	}
	return nil
}

func (m *model) loadOlder() tea.Cmd {
	p, c := m.pane, m.reader()
	if c == nil || p.loadingOlder || p.atStart || len(p.msgs) == 0 {
		return nil
	}
	p.loadingOlder = true
	cv, first := p.conv, p.msgs[0]
	return m.call(func(ctx context.Context) tea.Msg {
		es, err := page(ctx, c, pageQuery{Peer: cv.Peer, Group: cv.Group, Before: first, Limit: pageSize})
		return pageMsg{cv, es, err}
	})
}

// send sends what the compose box holds. It never waits on the screen:
// SendAsync runs in a command, and the stream's answer in another.
func (m *model) send() tea.Cmd {
	p := m.pane
	if p == nil {
		return nil
	}
	if m.sendBlocked() != "" {
		m.say("Not sent: " + strings.ToLower(m.sendBlocked()[:1]) + m.sendBlocked()[1:])
		return nil
	}
	text := m.compose.Value()
	if strings.TrimSpace(text) == "" {
		return nil
	}
	if m.client == nil {
		m.say("Not sent: you are offline (" + m.conn1 + "); it stays in the box")
		return nil
	}
	if len(text) > chat.MaxBodySize {
		m.say("Not sent: the message is longer than 48 KiB; share a file instead (s)")
		return nil
	}
	m.compose.Reset()
	m.layout()
	p.sending = append(p.sending, text)
	p.scroll = 0
	c, cv := m.client, p.conv
	if cv.Group != "" {
		return m.call(func(ctx context.Context) tea.Msg {
			_, err := c.SendGroup(ctx, cv.Group, text)
			return storedMsg{conv: cv, text: text, err: err}
		})
	}
	return m.call(func(ctx context.Context) tea.Msg {
		pd, err := c.SendAsync(ctx, cv.Handle, text)
		return storedMsg{conv: cv, text: text, p: pd, err: err}
	})
}

// sendBlocked says why the open conversation cannot be written to, or "".
func (m *model) sendBlocked() string {
	switch p := m.pane; {
	case p == nil:
		return ""
	case p.conv.Flag != chat.FlagNone:
		return "Sending is blocked until you accept the change"
	case p.conv.Request:
		return "Ctrl+A accepts the request, Ctrl+B blocks it"
	}
	return ""
}

// waitSent waits for the stream's answer to a stored message.
func (m *model) waitSent(cv conversation, pd *chat.Pending) tea.Cmd {
	ctx := m.ctx
	return func() tea.Msg {
		select {
		case <-pd.Done():
		case <-ctx.Done():
			return nil
		}
		_, err := pd.Wait(ctx)
		return sentMsg{cv, err}
	}
}

// accept accepts the open conversation's changed key or request (Ctrl+A).
func (m *model) accept() tea.Cmd {
	p := m.pane
	if p == nil {
		if cv, ok := m.chosen(); ok && cv.Request {
			return m.acceptRequest(cv)
		}
		return nil
	}
	switch {
	case p.conv.Request:
		return m.acceptRequest(p.conv)
	case p.conv.Flag != chat.FlagNone && p.conv.Handle != "":
		want, ok := m.newKey()
		if !ok {
			m.say("The new key is not known yet: wait for its safety number")
			return nil
		}
		c := m.client
		if c == nil {
			m.say("Accepting a new key needs your servers: you are offline")
			return nil
		}
		cv := p.conv
		m.say("Accepting the new key of @" + cleanLine(cv.Handle) + "…")
		return m.call(func(ctx context.Context) tea.Msg {
			// The key shown is the key pinned: AcceptKey pins it only
			// if the servers name it in that same resolution, else
			// nothing is pinned and the banner shows the number of the
			// key they name now.
			ct, err := acceptKey(ctx, c, cv.Handle, want)
			return acceptedMsg{cv, ct, err}
		})
	}
	return nil
}

func (m *model) acceptRequest(cv conversation) tea.Cmd {
	c := m.client
	if c == nil {
		m.say("Accepting a request needs your servers: you are offline")
		return nil
	}
	if cv.Group != "" { // an invitation to a group
		return m.call(func(ctx context.Context) tea.Msg {
			return acceptedMsg{conv: cv, err: c.AcceptGroup(ctx, cv.Group)}
		})
	}
	return m.call(func(ctx context.Context) tea.Msg {
		ct, err := acceptRequest(ctx, c, cv.Peer)
		return acceptedMsg{cv, ct, err}
	})
}

func (m *model) block(cv conversation) tea.Cmd {
	c := m.reader()
	if c == nil {
		return nil
	}
	if cv.Group != "" {
		m.say("An invitation to a group is not blocked: leave it unaccepted")
		return nil
	}
	return m.call(func(ctx context.Context) tea.Msg {
		return blockedMsg{cv, block(ctx, c, cv.Peer)}
	})
}

func (m *model) addContact(handle string) tea.Cmd {
	if handle == "" {
		return nil
	}
	for _, cv := range m.convs { // a contact already: open it
		if cv.Group == "" && cv.Handle != "" && strings.EqualFold(strings.TrimPrefix(handle, "@"), cv.Handle) {
			m.setFocus(focusCompose)
			return m.open(cv)
		}
	}
	c := m.client
	if c == nil {
		m.say("Adding a contact needs your servers: you are offline")
		return nil
	}
	m.say("Looking up " + handle + "…")
	return m.call(func(ctx context.Context) tea.Msg {
		// Re-adding a contact pins what its servers say now: it is how
		// a changed key is accepted (Ctrl+A under the banner), never
		// what "n" does. A contact is opened, and its check raises the
		// banner.
		if ct, err := c.Contact(ctx, handle); err == nil {
			return addedMsg{ct: ct, known: true}
		}
		ct, err := c.AddContact(ctx, handle)
		return addedMsg{ct: ct, err: err}
	})
}

// resolvedMsg: the handles of requests' senders were looked up.
type resolvedMsg struct{ err error }

// resolve looks up the handles the requests' chains claim, so that the
// Requests section names them (one lookup round in flight at most).
func (m *model) resolve() tea.Cmd {
	c := m.client
	if c == nil {
		return nil
	}
	if m.resolving {
		m.resolveAgain = true
		return nil
	}
	m.resolving = true
	return m.call(func(ctx context.Context) tea.Msg {
		return resolvedMsg{c.ResolveRequests(ctx)}
	})
}

// arrived takes a message Client.Run received.
func (m *model) arrived(e *chat.Entry) tea.Cmd {
	cmds := []tea.Cmd{m.refreshList()}
	if e.Trust == chat.TrustRequest && e.PeerHandle == "" {
		cmds = append(cmds, m.resolve())
	}
	if p := m.pane; p != nil && p.shows(e) {
		if !p.detached {
			p.add(e)
			if p.scroll > 0 { // the reader stays on what they read
				p.scroll += len(p.lines(e, m.paneWidth(), m))
			}
		}
		if e.Incoming && e.Trust == chat.TrustTrusted && !e.Read {
			cmds = append(cmds, m.markRead(e))
		}
	}
	return tea.Batch(cmds...)
}

// markRead marks entries read, one call in flight at most.
func (m *model) markRead(es ...*chat.Entry) tea.Cmd {
	m.toMark = append(m.toMark, es...)
	c := m.reader()
	if m.marking || len(m.toMark) == 0 || c == nil {
		return nil
	}
	batch := m.toMark
	m.toMark, m.marking = nil, true
	return m.call(func(ctx context.Context) tea.Msg {
		return markedMsg{c.MarkRead(ctx, batch...)}
	})
}

// sdkDone takes the result of an SDK command.
func (m *model) sdkDone(msg tea.Msg) tea.Cmd {
	switch msg := msg.(type) {
	case paneMsg:
		p := m.pane
		if p == nil || !sameConv(p.conv, msg.conv) {
			return nil
		}
		if msg.refresh {
			p.busy = false
		}
		if msg.err != nil {
			m.sayErr("Cannot read the conversation", msg.err)
			return nil
		}
		p.contact = msg.contact
		p.setNewest(msg.entries, msg.refresh)
		var cmds []tea.Cmd
		var unread []*chat.Entry
		for _, e := range msg.entries {
			if e.Incoming && !e.Read && e.Trust == chat.TrustTrusted {
				unread = append(unread, e)
			}
		}
		if len(unread) > 0 {
			cmds = append(cmds, m.markRead(unread...), m.refreshList())
		}
		if p.dirty {
			p.dirty = false
			cmds = append(cmds, m.refreshPane())
		}
		return tea.Batch(cmds...)
	case pageMsg:
		p := m.pane
		if p == nil || !sameConv(p.conv, msg.conv) {
			return nil
		}
		p.loadingOlder = false
		if msg.err != nil {
			m.sayErr("Cannot read older messages", msg.err)
			return nil
		}
		p.addOlder(msg.entries)
		return nil
	case storedMsg:
		if p := m.pane; p != nil && sameConv(p.conv, msg.conv) {
			p.unsend(msg.text)
		}
		if errors.Is(msg.err, chat.ErrQueued) {
			// Stored, pending: the SDK publishes it once NATS is back.
			m.say("Queued: it is sent once NATS is back")
			return tea.Batch(m.refreshPane(), m.refreshList())
		}
		if msg.err != nil {
			if m.pane != nil && m.compose.Value() == "" {
				m.compose.SetValue(msg.text) // not lost: back in the box
			}
			m.sayErr("Not sent", msg.err)
			return m.refreshList()
		}
		cmds := []tea.Cmd{m.refreshPane(), m.refreshList()}
		if msg.p != nil {
			cmds = append(cmds, m.waitSent(msg.conv, msg.p))
		}
		return tea.Batch(cmds...)
	case sentMsg:
		if msg.err != nil && !errors.Is(msg.err, context.Canceled) {
			m.sayErr("Not sent", msg.err)
		}
		return m.refreshPane()
	case acceptedMsg:
		var mm *chat.RequestMismatchError
		if p := m.pane; errors.As(msg.err, &mm) && p != nil && sameConv(p.conv, msg.conv) && p.conv.Flag != chat.FlagNone {
			// Nothing was pinned: the banner shows the number of the
			// key the handle names now, for the next Ctrl+A.
			p.moved = mm.Current
			m.sayErr("Not accepted", errKeyMoved)
			return nil
		}
		if msg.err != nil {
			m.sayErr("Not accepted", msg.err)
			return nil
		}
		if msg.ct == nil { // a group's invitation
			m.say("You joined " + cleanLine(msg.conv.Group))
			if p := m.pane; p != nil && p.conv.Group == msg.conv.Group {
				cv := msg.conv
				cv.Request = false
				m.pane = newPane(cv)
				return tea.Batch(m.refreshList(), m.loadPane(m.reader(), cv, false))
			}
			return m.refreshList()
		}
		m.say("@" + msg.ct.Handle + " is a contact now")
		if p := m.pane; p != nil && p.conv.Peer == msg.conv.Peer && p.conv.Group == "" {
			cv := conversation{Peer: msg.ct.Key, Handle: msg.ct.Handle, Verified: msg.ct.Verified()}
			m.pane = newPane(cv)
			m.setFocus(focusCompose)
			return tea.Batch(m.refreshList(), m.loadPane(m.reader(), cv, false))
		}
		return m.refreshList()
	case blockedMsg:
		if msg.err != nil {
			m.sayErr("Not blocked", msg.err)
			return nil
		}
		m.say("Blocked " + convName(msg.conv) + ": nothing from that key is shown or stored any more")
		if p := m.pane; p != nil && p.conv.Peer == msg.conv.Peer {
			m.pane = nil
			m.setFocus(focusList)
		}
		return m.refreshList()
	case addedMsg:
		if msg.err != nil {
			m.sayErr("Not added", msg.err)
			return nil
		}
		if !msg.known {
			m.say("@" + msg.ct.Handle + " is a contact now")
		}
		cv := conversation{Peer: msg.ct.Key, Handle: msg.ct.Handle, Flag: msg.ct.Flag, Verified: msg.ct.Verified()}
		m.setFocus(focusCompose)
		return tea.Batch(m.refreshList(), m.open(cv))
	case checkMsg:
		p := m.pane
		if msg.ct == nil {
			if msg.err != nil && flaggedErr(msg.err) {
				return m.refreshList() // the flag is stored: the list says it
			}
			return nil
		}
		if p != nil && sameConv(p.conv, msg.conv) {
			p.contact = msg.ct
			p.conv.Flag, p.conv.Verified = msg.ct.Flag, msg.ct.Verified()
		}
		if msg.ct.Flag != msg.conv.Flag {
			return m.refreshList()
		}
		return nil
	case resolvedMsg:
		m.resolving = false
		cmds := []tea.Cmd{m.refreshList()}
		if m.resolveAgain {
			m.resolveAgain = false
			cmds = append(cmds, m.resolve())
		}
		return tea.Batch(cmds...)
	case markedMsg:
		m.marking = false
		if msg.err != nil {
			m.sayErr("Cannot mark messages read", msg.err)
		}
		return tea.Batch(m.markRead(), m.refreshList())
	}
	return nil
}

// errKeyMoved: the servers named another key than the one whose safety
// number was shown.
var errKeyMoved = errors.New("the handle names another key than the one shown: compare the new safety number")

// flaggedErr reports whether err is a contact's key change or chain
// rewrite.
func flaggedErr(err error) bool {
	var kc *chat.KeyChangedError
	var cr *chat.ChainRewrittenError
	return errors.As(err, &kc) || errors.As(err, &cr)
}

// convName is how a list row names the conversation: the handle without its
// "@", the group's name after "# " (a title is the group's creator's
// choice, and may read as a contact's handle), or a request's short key.
func convName(c conversation) string {
	switch {
	case c.Group != "":
		if c.Title != "" {
			return "# " + cleanLine(c.Title)
		}
		return "# " + cleanLine(c.Group)
	case c.Handle != "":
		return cleanLine(c.Handle)
	}
	return shortKey(c.Peer)
}

// shortKey is the first characters of a key, for a requester with no
// confirmed handle.
func shortKey(k kez.PublicKey) string {
	s := k.String()
	if len(s) > 12 {
		return s[:12] + "…"
	}
	return s
}
