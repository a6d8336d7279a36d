package ui

import (
	"context"
	"strconv"
	"strings"
	"time"

	"charm.land/bubbles/v2/textarea"
	"charm.land/bubbles/v2/textinput"
	tea "charm.land/bubbletea/v2"
	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/files"
	"github.com/nats-io/nats.go"
)

// noticeFor is how long a sentence stays in the status line.
const noticeFor = 15 * time.Second

// focus is where the keys go.
type focus int

const (
	focusList focus = iota
	focusCompose
)

// model is the UI's state. Only the UI goroutine touches it; SDK calls
// run in tea.Cmds and come back as messages.
type model struct {
	ctx context.Context
	cfg *Config

	width, height int

	// The conversation list: convs (people and groups) then requests.
	convs, requests []conversation
	sel             int // index over convs then the drawn requests
	// selGone: the selected conversation left the drawn rows (a refresh
	// moved it): sel now points at another row the user did not choose,
	// so accepting or blocking waits for a move.
	selGone   bool
	listTop   int // first conversation drawn
	listBusy  bool
	listDirty bool // a refresh was asked for while one ran

	local  *chat.Client // opened without servers, for reading
	client *chat.Client // online once onlineMsg came
	conn   *nats.Conn
	conn1  string // the connection state, in words
	failed int    // failed attempts to go online
	why    string // why the last one failed

	pane    *pane // the open conversation, or nil
	compose textarea.Model
	focus   focus

	help   bool
	prompt *prompt // a question at the bottom ("Add contact: "), or nil

	files      *filesView
	filesShown bool

	notice   string // one line for the status line (an error, a result)
	noticeAt time.Time

	resolving    bool // a ResolveRequests runs
	resolveAgain bool // and another was asked for

	marking bool          // a MarkRead runs
	toMark  []*chat.Entry // waiting for it
}

// prompt is a one-line question with its answer box.
type prompt struct {
	label  string
	input  textinput.Model
	answer func(string) tea.Cmd
}

func newModel(ctx context.Context, cfg *Config) *model {
	m := &model{ctx: ctx, cfg: cfg, width: 80, height: 24, conn1: "○ connecting…"}
	m.compose = newCompose()
	m.files = newFilesView(cfg)
	m.files.chat = func() *chat.Client { return m.client }
	return m
}

// newCompose is the compose box: Enter sends (handled by the model),
// Alt+Enter or Ctrl+J inserts a line break.
func newCompose() textarea.Model {
	ta := textarea.New()
	ta.Prompt = ""
	ta.ShowLineNumbers = false
	ta.Placeholder = "Type a message · Enter sends · Alt+Enter new line"
	ta.DynamicHeight = true
	ta.MinHeight = 3
	ta.MaxHeight = 6
	ta.CharLimit = chat.MaxBodySize
	ta.KeyMap.InsertNewline.SetKeys("alt+enter", "ctrl+j")
	ta.KeyMap.LineStart.SetKeys("home")         // Ctrl+A accepts
	ta.KeyMap.CharacterBackward.SetKeys("left") // Ctrl+B blocks
	ta.KeyMap.PageUp.SetKeys()                  // PgUp/PgDn scroll the history
	ta.KeyMap.PageDown.SetKeys()
	st := ta.Styles()
	st.Cursor.Blink = false
	st.Focused.CursorLine = st.Focused.Text
	ta.SetStyles(st)
	return ta
}

// shutdown closes what the UI opened, once the program ended.
func (m *model) shutdown() {
	m.files.close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if m.client != nil {
		m.client.Shutdown(ctx)
	}
	if m.local != nil {
		m.local.Close()
	}
}

// Init starts the connection poll.
func (m *model) Init() tea.Cmd { return tick() }

type tickMsg time.Time

func tick() tea.Cmd {
	return tea.Tick(time.Second, func(t time.Time) tea.Msg { return tickMsg(t) })
}

// reader is the client to read with: the online one, else the local one.
func (m *model) reader() *chat.Client {
	if m.client != nil {
		return m.client
	}
	return m.local
}

// say puts a sentence in the status line.
func (m *model) say(s string) {
	m.notice, m.noticeAt = cleanLine(s), m.cfg.Now()
}

// sayErr words err in the status line.
func (m *model) sayErr(what string, err error) {
	m.say(what + ": " + m.cfg.Explain(err))
}

// Update handles one message.
func (m *model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
		m.layout()
		return m, nil
	case tea.KeyPressMsg:
		return m, m.key(msg)
	case tea.PasteMsg:
		if m.filesShown { // a path pasted into its prompt
			_, cmd := m.files.update(msg)
			return m, cmd
		}
		if m.prompt != nil {
			var cmd tea.Cmd
			m.prompt.input, cmd = m.prompt.input.Update(msg)
			return m, cmd
		}
		if m.focus == focusCompose && m.pane != nil && m.sendBlocked() == "" {
			var cmd tea.Cmd
			m.compose, cmd = m.compose.Update(msg)
			return m, cmd
		}
		return m, nil
	case tickMsg:
		m.pollConn()
		if m.notice != "" && m.cfg.Now().Sub(m.noticeAt) > noticeFor {
			m.notice = ""
		}
		return m, tick()
	case localMsg:
		if msg.err != nil {
			m.sayErr("Cannot read your messages", msg.err)
			return m, nil
		}
		m.local = msg.c
		return m, m.refreshList()
	case offlineMsg:
		m.failed, m.why = msg.attempt, cleanLine(m.cfg.Explain(msg.err)) // may quote a server
		m.conn1 = "○ offline"
		return m, nil
	case onlineMsg:
		m.client, m.conn, m.failed, m.why = msg.c, msg.c.Conn(), 0, ""
		if m.local != nil {
			go m.local.Close()
			m.local = nil
		}
		m.pollConn()
		return m, tea.Batch(m.refreshList(), m.refreshPane(), m.resolve())
	case runEndedMsg:
		if msg.err != nil && m.ctx.Err() == nil {
			m.sayErr("Stopped receiving messages", msg.err)
		}
		return m, nil
	case sharingMsg:
		if msg.err != nil {
			m.sayErr("Files are offline", msg.err)
			return m, nil
		}
		m.files.setSharing(msg.s)
		return m, nil
	case entryMsg:
		return m, m.arrived(msg.e)
	case receiptMsg:
		return m, m.refreshPane()
	case listMsg:
		return m, m.listDone(msg)
	case pageMsg, paneMsg, sentMsg, storedMsg, acceptedMsg, blockedMsg, addedMsg, markedMsg, checkMsg, resolvedMsg:
		return m, m.sdkDone(msg)
	case filesScreenMsg: // a fetch goes on while another screen shows
		_, cmd := m.files.update(msg)
		return m, cmd
	}
	// The files screen's own results come at any time (a fetch goes on
	// while the screen is closed).
	done, fcmd := m.files.update(msg)
	if m.filesShown {
		if done {
			m.filesShown = false
		}
		return m, fcmd
	}
	if m.prompt != nil {
		var cmd tea.Cmd
		m.prompt.input, cmd = m.prompt.input.Update(msg)
		return m, tea.Batch(fcmd, cmd)
	}
	var cmd tea.Cmd
	m.compose, cmd = m.compose.Update(msg)
	return m, tea.Batch(fcmd, cmd)
}

// sharingMsg: OpenFiles returned.
type sharingMsg struct {
	s   *files.Sharing
	err error
}

// pollConn reads the connection's state (no I/O: nats.Conn keeps it).
func (m *model) pollConn() {
	if m.conn == nil {
		if m.failed > 0 {
			m.conn1 = "○ offline"
		}
		return
	}
	switch m.conn.Status() {
	case nats.CONNECTED:
		m.conn1 = "● online"
	case nats.RECONNECTING, nats.DISCONNECTED:
		m.conn1 = "○ offline — reconnecting (" + strconv.FormatUint(m.conn.Stats().Reconnects, 10) + ")"
	case nats.CLOSED:
		m.conn1 = "○ offline"
	default:
		m.conn1 = "○ connecting…"
	}
}

// key handles a key press.
func (m *model) key(k tea.KeyPressMsg) tea.Cmd {
	s := k.String()
	if s == "ctrl+c" {
		return tea.Quit
	}
	if s == "f1" {
		m.help = !m.help
		return nil
	}
	if m.help {
		m.help = false
		return nil
	}
	if m.filesShown {
		done, cmd := m.files.update(k)
		if done {
			m.filesShown = false
		}
		return cmd
	}
	if m.prompt != nil {
		switch s {
		case "esc":
			m.prompt = nil
			return nil
		case "enter":
			p := m.prompt
			m.prompt = nil
			return p.answer(strings.TrimSpace(p.input.Value()))
		}
		var cmd tea.Cmd
		m.prompt.input, cmd = m.prompt.input.Update(k)
		return cmd
	}
	switch s {
	case "pgup":
		return m.scroll(+1)
	case "pgdown":
		return m.scroll(-1)
	case "ctrl+a":
		return m.accept()
	case "ctrl+b":
		if m.pane != nil && m.pane.conv.Request {
			return m.block(m.pane.conv)
		}
	}
	if m.focus == focusCompose && m.pane != nil {
		switch s {
		case "esc", "tab":
			m.setFocus(focusList)
			return nil
		case "enter":
			return m.send()
		}
		if m.sendBlocked() != "" {
			return nil // nothing to write into
		}
		var cmd tea.Cmd
		m.compose, cmd = m.compose.Update(k)
		m.layout()
		return cmd
	}
	return m.listKey(s)
}

// listKey handles a key while the list has the focus.
func (m *model) listKey(s string) tea.Cmd {
	switch s {
	case "q":
		return tea.Quit
	case "?":
		m.help = true
	case "up", "k":
		m.move(-1)
	case "down", "j":
		m.move(+1)
	case "home":
		m.move(-len(m.convs) - len(m.requests))
	case "end":
		m.move(len(m.convs) + len(m.requests))
	case "tab":
		if m.pane != nil {
			m.setFocus(focusCompose)
		}
	case "enter":
		if cv, ok := m.selected(); ok {
			m.setFocus(focusCompose)
			return m.open(cv)
		}
	case "a":
		if cv, ok := m.chosen(); ok && cv.Request {
			return m.acceptRequest(cv)
		}
	case "b":
		if cv, ok := m.chosen(); ok && cv.Request {
			return m.block(cv)
		}
	case "f":
		if cv, ok := m.selected(); ok && cv.Handle != "" && cv.Group == "" && !cv.Request {
			m.filesShown = true
			return m.files.showContact(cv.Handle)
		}
	case "s":
		m.filesShown = true
		return m.files.showOwn()
	case "n":
		m.ask("Add contact (handle): ", func(h string) tea.Cmd { return m.addContact(h) })
	}
	return nil
}

// ask shows a prompt at the bottom.
func (m *model) ask(label string, answer func(string) tea.Cmd) {
	in := textinput.New()
	in.Prompt = ""
	in.CharLimit = 256
	in.SetWidth(max(10, m.width-len(label)-2))
	in.Focus()
	m.prompt = &prompt{label: label, input: in, answer: answer}
}

// setFocus moves the keys to the list or the compose box.
func (m *model) setFocus(f focus) {
	m.focus = f
	if f == focusCompose {
		m.compose.Focus()
	} else {
		m.compose.Blur()
	}
}

// rows is how many list rows can be selected: the conversations and the
// requests drawn.
func (m *model) rows() int { return len(m.convs) + min(len(m.requests), maxRequestRows) }

// selected returns the highlighted row.
func (m *model) selected() (conversation, bool) {
	switch {
	case m.sel < len(m.convs):
		return m.convs[m.sel], true
	case m.sel-len(m.convs) < min(len(m.requests), maxRequestRows):
		return m.requests[m.sel-len(m.convs)], true
	}
	return conversation{}, false
}

// chosen returns the highlighted row if the user put the highlight
// there; after a refresh moved it off a conversation that went away, it
// says so instead, and nothing is accepted or blocked.
func (m *model) chosen() (conversation, bool) {
	if m.selGone {
		m.say("The list changed under the selection: select the request again")
		return conversation{}, false
	}
	return m.selected()
}

func (m *model) move(d int) {
	m.sel = max(0, min(m.rows()-1, m.sel+d))
	m.selGone = false
}

// setConversations replaces the list, keeping the selection on the same
// conversation.
func (m *model) setConversations(all []conversation) {
	cur, had := m.selected()
	m.convs, m.requests = m.convs[:0], m.requests[:0]
	for _, c := range all {
		if c.Request {
			m.requests = append(m.requests, c)
		} else {
			m.convs = append(m.convs, c)
		}
	}
	if had {
		for _, same := range []func(a, b conversation) bool{sameConv, samePeer} {
			for i := 0; i < m.rows(); i++ {
				if c, _ := m.rowAt(i); same(c, cur) {
					m.sel = i
					return
				}
			}
		}
	}
	m.sel = max(0, min(m.rows()-1, m.sel))
	m.selGone = m.selGone || had
}

func (m *model) rowAt(i int) (conversation, bool) {
	save := m.sel
	m.sel = i
	c, ok := m.selected()
	m.sel = save
	return c, ok
}

// sameConv reports whether a and b are the same conversation.
func sameConv(a, b conversation) bool {
	return a.Group == b.Group && a.Peer == b.Peer && a.Request == b.Request
}

// samePeer reports whether a and b are the same person or group, a
// request or not (a request the user accepted).
func samePeer(a, b conversation) bool { return a.Group == b.Group && a.Peer == b.Peer }
