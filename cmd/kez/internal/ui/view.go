package ui

import (
	"strconv"
	"strings"

	tea "charm.land/bubbletea/v2"
	"charm.land/lipgloss/v2"
	"github.com/charmbracelet/x/ansi"
	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/kez"
)

const (
	listWidth      = 26 // the conversation list's column
	narrow         = 60 // below this width, one pane at a time
	maxRequestRows = 5  // request rows drawn; the rest are counted
)

// Styles. Every state is also in words, so a terminal without colours
// (NO_COLOR, TERM=dumb) loses nothing.
var (
	dim      = lipgloss.NewStyle().Faint(true)
	bold     = lipgloss.NewStyle().Bold(true)
	titleBar = lipgloss.NewStyle().Bold(true).Reverse(true)
	selRow   = lipgloss.NewStyle().Reverse(true)
	alarm    = lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("15")).Background(lipgloss.Color("1"))
	notice   = lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("0")).Background(lipgloss.Color("3"))
	theirs   = lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("6"))
	mine     = lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("2"))
	bad      = lipgloss.NewStyle().Foreground(lipgloss.Color("1"))
)

func nameStyle(e *chat.Entry) lipgloss.Style {
	if e.Incoming {
		return theirs
	}
	return mine
}

func stateStyle(state string) lipgloss.Style {
	if strings.HasPrefix(state, "✗") {
		return bad
	}
	return dim
}

// fit truncates s (styled) to w cells and pads it to exactly w.
func fit(s string, w int) string {
	if w <= 0 {
		return ""
	}
	if ansi.StringWidth(s) > w {
		s = ansi.Truncate(s, w, "…")
	}
	return s + strings.Repeat(" ", max(0, w-ansi.StringWidth(s)))
}

// layout sizes the compose box to the screen.
func (m *model) layout() {
	m.compose.SetWidth(max(10, m.paneWidth()))
}

// twoPanes reports whether the list and the pane are side by side.
func (m *model) twoPanes() bool { return m.width >= narrow }

func (m *model) paneWidth() int {
	if m.twoPanes() {
		return m.width - listWidth - 1
	}
	return m.width
}

// bodyHeight is the rows between the title and the status line.
func (m *model) bodyHeight() int { return max(1, m.height-2) }

// historyHeight is the rows the open conversation's messages get.
func (m *model) historyHeight() int {
	return max(1, m.bodyHeight()-1-len(m.banner())-1-m.composeHeight())
}

func (m *model) composeHeight() int {
	if m.sendBlocked() != "" {
		return 1
	}
	return m.compose.Height()
}

// View draws the screen.
func (m *model) View() tea.View {
	var rows []string
	rows = append(rows, m.titleRow())
	bh := m.bodyHeight()
	var left, right []string
	switch {
	case m.twoPanes():
		left, right = m.listLines(listWidth, bh), m.rightLines(m.paneWidth(), bh)
	case m.pane != nil && m.focus == focusCompose || m.filesShown || m.help:
		right = m.rightLines(m.width, bh)
	default:
		left = m.listLines(m.width, bh)
	}
	for i := 0; i < bh; i++ {
		switch {
		case left != nil && right != nil:
			rows = append(rows, fit(left[i], listWidth)+dim.Render("│")+fit(right[i], m.paneWidth()))
		case left != nil:
			rows = append(rows, fit(left[i], m.width))
		default:
			rows = append(rows, fit(right[i], m.width))
		}
	}
	rows = append(rows, m.statusRow())
	v := tea.NewView(strings.Join(rows, "\n"))
	v.AltScreen = true
	v.WindowTitle = "kez"
	return v
}

func (m *model) titleRow() string {
	who := "@" + m.cfg.Handle
	if m.cfg.Handle == "" {
		who = m.cfg.Me.String()
	}
	l := " kez — " + cleanLine(who)
	r := m.hint() + " "
	if m.width < ansi.StringWidth(l)+ansi.StringWidth(r)+1 {
		return titleBar.Render(fit(l, m.width))
	}
	return titleBar.Render(l + strings.Repeat(" ", m.width-ansi.StringWidth(l)-ansi.StringWidth(r)) + r)
}

// hint names the main keys where the focus is.
func (m *model) hint() string {
	switch {
	case m.help:
		return "any key closes the help"
	case m.filesShown:
		return "Esc back · F1 help"
	case m.prompt != nil:
		return "Enter confirms · Esc cancels"
	case m.focus == focusCompose && m.pane != nil:
		return "Enter send · Esc list · F1 help"
	}
	return "Enter open · ? help · q quit"
}

func (m *model) statusRow() string {
	if m.prompt != nil {
		return fit(bold.Render(m.prompt.label)+m.prompt.input.View(), m.width)
	}
	l := m.conn1
	if m.conn == nil && m.failed > 0 {
		l = "○ offline — trying again (" + strconv.Itoa(m.failed) + ")"
	}
	if m.cfg.Handle != "" {
		l += "  @" + cleanLine(m.cfg.Handle)
	}
	switch {
	case m.notice != "":
		l += "  " + m.notice
	case m.conn == nil && m.why != "":
		l += "  " + m.why
	}
	r := m.files.status()
	if r == "" {
		return fit(l, m.width)
	}
	lw := m.width - ansi.StringWidth(r) - 2
	if lw < 10 {
		return fit(l, m.width)
	}
	return fit(l, lw) + "  " + dim.Render(r)
}

// listLines draws the conversation list in w×h cells.
func (m *model) listLines(w, h int) []string {
	out := make([]string, 0, h)
	reqLines := 0
	if len(m.requests) > 0 {
		reqLines = 1 + min(len(m.requests), maxRequestRows)
		if len(m.requests) > maxRequestRows {
			reqLines++
		}
	}
	convRows := max(1, (h-reqLines)/2)
	if m.sel < len(m.convs) {
		if m.sel < m.listTop {
			m.listTop = m.sel
		}
		if m.sel >= m.listTop+convRows {
			m.listTop = m.sel - convRows + 1
		}
	} else {
		m.listTop = max(0, len(m.convs)-convRows)
	}
	m.listTop = max(0, min(m.listTop, len(m.convs)-1))
	if len(m.convs) == 0 && len(m.requests) == 0 {
		out = append(out, dim.Render(" No conversations yet."), dim.Render(" n: start one"))
	}
	for i := m.listTop; i < len(m.convs) && len(out)+2 <= h-reqLines; i++ {
		out = append(out, m.rowLines(m.convs[i], i == m.sel, w)...)
	}
	if reqLines > 0 && len(out) < h {
		out = append(out, bold.Render(fit(" Requests ("+strconv.Itoa(len(m.requests))+")", w)))
		for i, r := range m.requests[:min(len(m.requests), maxRequestRows)] {
			if len(out) >= h {
				break
			}
			line := " " + convName(r)
			if r.Handle == "" && r.Group == "" {
				line = " " + shortKey(r.Peer) + " (unconfirmed)"
			}
			if m.sel == len(m.convs)+i {
				line = m.selStyle().Render(fit(line, w))
			}
			out = append(out, line)
		}
		if more := len(m.requests) - maxRequestRows; more > 0 && len(out) < h {
			out = append(out, dim.Render(" … and "+strconv.Itoa(more)+" more"))
		}
	}
	for len(out) < h {
		out = append(out, "")
	}
	return out[:h]
}

func (m *model) selStyle() lipgloss.Style {
	if m.focus == focusList {
		return selRow
	}
	return bold
}

// rowLines draws one conversation: its name with marks, then the last
// message's first line, dimmed.
func (m *model) rowLines(c conversation, selected bool, w int) []string {
	marks := ""
	if c.Unread > 0 {
		marks += " (" + strconv.Itoa(c.Unread) + ")"
	}
	switch {
	case c.Flag != chat.FlagNone:
		marks += " !"
	case c.Verified:
		marks += " ✓"
	}
	name := convName(c)
	room := w - 1 - ansi.StringWidth(marks)
	if ansi.StringWidth(name) > room {
		name = ansi.Truncate(name, max(1, room), "…")
	}
	top := fit(" "+name+marks, w)
	if selected {
		top = m.selStyle().Render(top)
	} else if c.Unread > 0 {
		top = bold.Render(top)
	}
	last := ""
	if c.Last != nil {
		first, _, _ := strings.Cut(clean(c.Last.Text()), "\n")
		if !c.Last.Incoming {
			first = "you: " + first
		}
		last = dim.Render(fit("   "+first, w))
	}
	return []string{top, last}
}

// rightLines draws the right side: files, help, or the conversation.
func (m *model) rightLines(w, h int) []string {
	var out []string
	switch {
	case m.help:
		out = helpLines(w)
	case m.filesShown:
		out = strings.Split(m.files.view(w, h), "\n")
	case m.pane == nil:
		out = []string{"", dim.Render(" Choose a conversation: ↑/↓ then Enter."), dim.Render(" n starts a new one, ? shows every key.")}
	default:
		out = m.paneLines(w, h)
	}
	for len(out) < h {
		out = append(out, "")
	}
	return out[:h]
}

// paneLines draws the open conversation.
func (m *model) paneLines(w, h int) []string {
	p := m.pane
	head := " " + bold.Render(convName(p.conv))
	switch {
	case p.conv.Group != "":
		head += dim.Render("  group " + cleanLine(p.conv.Group))
	case p.conv.Request:
		head += dim.Render("  message request")
	case p.conv.Verified:
		head += dim.Render("  ✓ verified")
	default:
		head += dim.Render("  not verified")
	}
	out := []string{head}
	out = append(out, m.banner()...)
	out = append(out, p.render(m, w, m.historyHeight())...)
	out = append(out, dim.Render(strings.Repeat("─", w)))
	if b := m.sendBlocked(); b != "" {
		out = append(out, bad.Render(" "+b))
	} else {
		out = append(out, strings.Split(m.compose.View(), "\n")...)
	}
	return out
}

// banner is what cannot be missed above a conversation: a flagged
// contact's change with the safety number to compare, or a request.
func (m *model) banner() []string {
	p := m.pane
	if p == nil {
		return nil
	}
	w := m.paneWidth()
	block := func(st lipgloss.Style, text string) []string {
		var out []string
		for _, l := range strings.Split(ansi.Wrap(text, max(10, w-2), " "), "\n") {
			out = append(out, st.Render(fit(" "+l, w)))
		}
		return out
	}
	switch {
	case p.conv.Request:
		return block(notice, "A message request from "+convName(p.conv)+" — Ctrl+A accept · Ctrl+B block")
	case p.conv.Flag != chat.FlagNone:
		h := cleanLine(p.conv.Handle)
		what := "@" + h + "'s KEY CHANGED"
		if p.conv.Flag == chat.FlagChainRewritten {
			what = "@" + h + "'s SIGCHAIN WAS REWRITTEN (a fork or a rollback)"
		}
		out := block(alarm, "WARNING: "+what)
		key, ok := m.newKey()
		if !ok { // never the old key's number in its place
			return append(out, block(alarm, "The new key is not known yet: checking with "+localPart(h)+"'s servers…")...)
		}
		out = append(out, block(alarm, "Safety number of the new key: "+kez.SafetyNumber(m.cfg.Me, key))...)
		out = append(out, block(alarm, "Compare it with "+localPart(h)+" in person, then press Ctrl+A to accept the new key.")...)
		return out
	}
	return nil
}

// newKey is the key a flagged contact's handle names now, the one whose
// safety number the banner shows and Ctrl+A accepts: for a changed key,
// known once the contact was read (never the old key in its place).
func (m *model) newKey() (kez.PublicKey, bool) {
	p := m.pane
	switch {
	case p == nil || p.conv.Flag == chat.FlagNone:
		return kez.PublicKey{}, false
	case !p.moved.IsZero(): // an accept was refused: the key named then
		return p.moved, true
	case p.contact != nil && p.contact.Flag == chat.FlagKeyChanged:
		return p.contact.FlagKey, !p.contact.FlagKey.IsZero()
	case p.conv.Flag == chat.FlagKeyChanged:
		return kez.PublicKey{}, false
	}
	return p.conv.Peer, true // a rewritten chain: the same key
}

// helpLines is the help overlay.
func helpLines(w int) []string {
	keys := [][2]string{
		{"Tab", "list ↔ message box"},
		{"↑/↓ k/j", "move in the list"},
		{"Enter", "open (list) · send (message box)"},
		{"Alt+Enter", "new line (or Ctrl+J)"},
		{"Esc", "back to the list"},
		{"PgUp/PgDn", "scroll; older messages load"},
		{"n", "new conversation (a handle)"},
		{"a / b", "accept / block the selected request"},
		{"Ctrl+A", "accept a request or a new key"},
		{"Ctrl+B", "block the open request"},
		{"f", "the selected contact's files"},
		{"s", "your shared files"},
		{"? or F1", "this help; any key closes it"},
		{"q", "quit (list) · Ctrl+C anywhere"},
	}
	out := []string{"", bold.Render(" Keys"), ""}
	for _, k := range keys {
		out = append(out, fit(" "+bold.Render(fit(k[0], 11))+" "+k[1], w))
	}
	return out
}
