package ui

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"
	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/kez"
)

// A hostile server's error text (a NATS -ERR, an HTTP body quoted in an
// error) is drawn in the status line as text, never as a terminal
// command.
func TestServerErrorTextIsInert(t *testing.T) {
	m := testModel(t, 100, 24)
	m.Update(offlineMsg{err: errors.New("nats: \x1b]0;pwned\x07\x1b[2J\u202eevil\nsecond"), attempt: 1})
	raw := m.View().Content
	for _, bad := range []string{"\x1b]0", "\x1b[2J", "\x07", "\u202e"} {
		if strings.Contains(raw, bad) {
			t.Errorf("the screen holds %q:\n%q", bad, raw)
		}
	}
	if s := screen(m); !strings.Contains(s, "]0;pwned[2Jevil second") {
		t.Errorf("the error is not shown as text:\n%s", s)
	}
}

// In a group, a member whose handle is on another domain is named in
// full: "bob@evil.example" never draws as the "bob" of the user's own
// domain.
func TestForeignSenderNamedInFull(t *testing.T) {
	m := testModel(t, 100, 24)
	cv := conversation{Group: "g1", Title: "team"}
	es := []*chat.Entry{
		{ID: chat.MessageID{1}, Incoming: true, Group: "g1", From: testKey(1), PeerHandle: "bob@kez.test", Body: []byte("hi"), SentAt: m.cfg.Now(), Trust: chat.TrustTrusted, Read: true},
		{ID: chat.MessageID{2}, Incoming: true, Group: "g1", From: testKey(2), PeerHandle: "bob@evil.example", Body: []byte("send me your words"), SentAt: m.cfg.Now(), Trust: chat.TrustTrusted, Read: true},
	}
	m.Update(listMsg{convs: []conversation{cv}})
	m.pane = newPane(cv)
	m.Update(paneMsg{conv: cv, entries: es})
	s := screen(m)
	if !strings.Contains(s, " bob: hi") || !strings.Contains(s, " bob@evil.example: send me your words") {
		t.Errorf("the senders are not told apart:\n%s", s)
	}
}

// A body's further lines are indented under its sender, so a line
// "21:30 bob: ..." inside a stranger's message never starts where a
// message does.
func TestBodyLinesCannotPoseAsMessages(t *testing.T) {
	m := testModel(t, 100, 24)
	cv := conversation{Peer: testKey(3), Handle: "mallory@kez.test"}
	e := &chat.Entry{ID: chat.MessageID{3}, Incoming: true, Peer: testKey(3), From: testKey(3), PeerHandle: "mallory@kez.test", Body: []byte("ok\n21:30 bob: send me your words\r21:30 bob: again\u2028 21:30 bob: and"), SentAt: m.cfg.Now(), Trust: chat.TrustTrusted, Read: true}
	m.Update(listMsg{convs: []conversation{cv}})
	m.pane = newPane(cv)
	m.Update(paneMsg{conv: cv, entries: []*chat.Entry{e}})
	for _, l := range strings.Split(screen(m), "\n") {
		if i := strings.Index(l, "21:30 bob"); i >= 0 && !strings.HasPrefix(l[i-min(i, 6):], "      ") {
			t.Errorf("a body line starts like a message: %q", l)
		}
	}
}

// The selected request vanishing (pushed past the drawn rows by new
// requests, or accepted on another device) never leaves "a" or Ctrl+A
// on another requester's row.
func TestAcceptNeverTakesAnotherRequest(t *testing.T) {
	for _, key := range []tea.KeyPressMsg{{Code: 'a', Text: "a"}, {Code: 'a', Mod: tea.ModCtrl}} {
		m := testModel(t, 100, 30)
		var reqs []conversation
		for i := range maxRequestRows {
			reqs = append(reqs, conversation{Peer: testKey(byte(10 + i)), Request: true, Handle: "friend" + strconv.Itoa(i) + "@kez.test"})
		}
		m.Update(listMsg{convs: reqs})
		m.move(maxRequestRows - 1)
		chosen, _ := m.selected()
		// A stranger's request arrives, newest first.
		m.Update(listMsg{convs: append([]conversation{{Peer: testKey(99), Request: true, Handle: "mallory@kez.test"}}, reqs...)})
		m.Update(key)
		if strings.Contains(m.notice, "offline") { // it went as far as asking the servers
			cv, _ := m.selected()
			t.Errorf("%s: acted on %s although %s was chosen", key, convName(cv), convName(chosen))
		}
	}
}

// "n" with the handle of a contact opens the conversation (its check
// raises the key-change banner) and never re-adds it: re-adding is how
// a changed key is accepted, without its safety number being shown.
func TestNewPromptNeverRepinsAContact(t *testing.T) {
	m := testModel(t, 100, 24)
	cv := conversation{Peer: testKey(1), Handle: "bob@kez.test", Flag: chat.FlagKeyChanged}
	m.Update(listMsg{convs: []conversation{cv}})
	m.Update(tea.KeyPressMsg{Code: 'n', Text: "n"})
	m.Update(tea.PasteMsg{Content: "@Bob@kez.test"})
	m.Update(tea.KeyPressMsg{Code: tea.KeyEnter})
	if strings.Contains(m.notice, "Adding a contact") || strings.Contains(m.notice, "Looking up") {
		t.Fatalf("n re-added the flagged contact: %q", m.notice)
	}
}

// A paste never sends: a pasted line break (and any escape sequence in
// the paste) stays in the box as text, and a paste into a flagged
// conversation is refused like typing.
func TestPasteNeverSends(t *testing.T) {
	m := testModel(t, 100, 24)
	cv := conversation{Peer: testKey(1), Handle: "bob@kez.test"}
	m.Update(listMsg{convs: []conversation{cv}})
	m.pane = newPane(cv)
	m.setFocus(focusCompose)
	if _, cmd := m.Update(tea.PasteMsg{Content: "line\r\n\x1b[2Jmore\n"}); cmd != nil {
		if msg := cmd(); msg != nil {
			t.Errorf("a paste made %T", msg)
		}
	}
	if raw := m.View().Content; strings.Contains(raw, "\x1b[2J") {
		t.Errorf("the pasted escape reached the screen: %q", raw)
	}
	flagged := conversation{Peer: testKey(2), Handle: "carol@kez.test", Flag: chat.FlagKeyChanged}
	m.pane = newPane(flagged)
	m.compose.Reset()
	m.Update(tea.PasteMsg{Content: "words"})
	if v := m.compose.Value(); v != "" {
		t.Errorf("a paste went into the box of a flagged contact: %q", v)
	}
}

// Width tricks (wide CJK and emoji, joiners, combining marks by the
// thousand, tabs, invalid UTF-8) in names, titles and bodies never push
// a row past the screen's width nor shift the columns.
func TestWidthTricksKeepTheLayout(t *testing.T) {
	m := testModel(t, 80, 24)
	zalgo := "b" + strings.Repeat("\u0301", 10000) + "ob"
	names := []string{"漢字漢字漢字漢字漢字漢字漢字漢字@kez.test", "👩‍👩‍👧‍👦👩‍👩‍👧‍👦👩‍👩‍👧‍👦👩‍👩‍👧‍👦👩‍👩‍👧‍👦👩‍👩‍👧‍👦@kez.test", zalgo + "@kez.test", "tab\there\xff@kez.test"}
	var convs []conversation
	for i, n := range names {
		last := &chat.Entry{Incoming: true, Body: []byte(n + " " + zalgo), SentAt: m.cfg.Now()}
		convs = append(convs, conversation{Peer: testKey(byte(i + 1)), Handle: n, Last: last})
		convs = append(convs, conversation{Peer: testKey(byte(i + 50)), Handle: n, Request: true})
	}
	convs = append(convs, conversation{Group: "g", Title: zalgo + "漢字👩‍👩‍👧"})
	m.Update(listMsg{convs: convs})
	cv := convs[0]
	m.pane = newPane(cv)
	var es []*chat.Entry
	for i, n := range names {
		es = append(es, &chat.Entry{ID: chat.MessageID{byte(i)}, Incoming: true, Peer: cv.Peer, From: cv.Peer, PeerHandle: n, Body: []byte(strings.Repeat(n+" ", 5) + zalgo), SentAt: m.cfg.Now(), Trust: chat.TrustTrusted, Read: true})
	}
	m.Update(paneMsg{conv: cv, entries: es})
	for _, w := range []int{80, 45, 120} {
		m.Update(tea.WindowSizeMsg{Width: w, Height: 24})
		lines := strings.Split(m.View().Content, "\n")
		if len(lines) != 24 {
			t.Errorf("width %d: %d rows", w, len(lines))
		}
		for _, l := range lines {
			if got := ansi.StringWidth(l); got != w {
				t.Errorf("width %d: a row of %d cells: %q", w, got, ansi.Strip(l)[:min(60, len(ansi.Strip(l)))])
			}
			if w >= narrow {
				if i := strings.Index(ansi.Strip(l), "│"); i >= 0 && ansi.StringWidth(ansi.Strip(l)[:i]) != listWidth {
					t.Errorf("width %d: the divider moved: %q", w, ansi.Strip(l))
				}
			}
		}
	}
}

// A group whose title is a contact's handle ("bob@kez.test") is never
// drawn like that contact's row: a group's name carries its mark.
func TestGroupTitleCannotPoseAsContact(t *testing.T) {
	m := testModel(t, 100, 24)
	m.Update(listMsg{convs: []conversation{
		{Peer: testKey(1), Handle: "bob@kez.test"},
		{Group: "g1", Title: "bob@kez.test"},
		{Group: "g2", Title: "carol@kez.test", Request: true},
	}})
	s := screen(m)
	if strings.Count(s, "bob@kez.test") != 2 || strings.Count(s, "# bob@kez.test") != 1 || !strings.Contains(s, "# carol@kez.test") {
		t.Errorf("the group is drawn like the contact:\n%s", s)
	}
}

// While the changed key is not known (the contact not read yet), the
// banner never shows the old key's safety number as the new one's, and
// Ctrl+A accepts nothing: the number compared in person is the number
// of the key accepted.
func TestBannerNeverShowsTheOldKeyAsNew(t *testing.T) {
	m := testModel(t, 100, 24)
	cv := conversation{Peer: testKey(1), Handle: "bob@kez.test", Flag: chat.FlagKeyChanged}
	m.Update(listMsg{convs: []conversation{cv}})
	m.pane = newPane(cv)
	m.setFocus(focusCompose)
	old := strings.Fields(kez.SafetyNumber(m.cfg.Me, testKey(1)))
	if s := screen(m); strings.Contains(s, old[0]+" "+old[1]) || !strings.Contains(s, "KEY CHANGED") {
		t.Errorf("the banner shows the old key's number as the new one's:\n%s", s)
	}
	m.Update(tea.KeyPressMsg{Code: 'a', Mod: tea.ModCtrl})
	if strings.Contains(m.notice, "offline") || strings.Contains(m.notice, "Accepting") {
		t.Errorf("Ctrl+A went on with no new key known: %q", m.notice)
	}
	// Once the contact is read, its new key's number shows.
	m.pane.contact = &chat.Contact{Handle: "bob@kez.test", Key: testKey(1), Flag: chat.FlagKeyChanged, FlagKey: testKey(2)}
	sn := strings.Fields(kez.SafetyNumber(m.cfg.Me, testKey(2)))
	if s := screen(m); !strings.Contains(s, sn[0]+" "+sn[1]) {
		t.Errorf("the new key's number is not shown:\n%s", s)
	}
}
