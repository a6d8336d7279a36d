package ui

import (
	"context"
	"strings"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"
	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/kez"
)

// testModel is a model with no client, sized w×h, at a fixed clock.
func testModel(t *testing.T, w, h int) *model {
	t.Helper()
	now := time.Date(2026, 12, 7, 21, 30, 0, 0, time.Local)
	cfg := &Config{Handle: "alice@kez.test", Now: func() time.Time { return now }, Explain: func(err error) string { return err.Error() }}
	m := newModel(context.Background(), cfg)
	t.Cleanup(m.files.close)
	m.Update(tea.WindowSizeMsg{Width: w, Height: h})
	return m
}

func testKey(i byte) kez.PublicKey {
	var k kez.PublicKey
	k[0], k[31] = i, 1
	return k
}

// screen is the view without styles.
func screen(m *model) string { return ansi.Strip(m.View().Content) }

// A flood of requests draws a few rows and a count, whatever their
// number, and the rows stay selectable.
func TestRequestsAreCapped(t *testing.T) {
	m := testModel(t, 80, 24)
	convs := []conversation{{Peer: testKey(1), Handle: "bob@kez.test"}}
	for i := range 1000 {
		convs = append(convs, conversation{Peer: testKey(byte(i%250 + 2)), Request: true, Handle: "spam@kez.test"})
	}
	m.Update(listMsg{convs: convs})
	s := screen(m)
	if !strings.Contains(s, "Requests (1000)") || !strings.Contains(s, "… and 995 more") {
		t.Fatalf("the requests section:\n%s", s)
	}
	if n := strings.Count(s, "spam@kez.test"); n != maxRequestRows {
		t.Errorf("%d request rows drawn, want %d", n, maxRequestRows)
	}
	for range 2000 {
		m.Update(tea.KeyPressMsg{Code: tea.KeyDown})
	}
	if m.sel != 1+maxRequestRows-1 {
		t.Errorf("the selection went to row %d", m.sel)
	}
}

// What others wrote (handles, bodies) is drawn without its control
// characters: no escape sequence of theirs reaches the terminal.
func TestReceivedTextIsInert(t *testing.T) {
	m := testModel(t, 80, 24)
	evil := "\x1b]0;pwned\x07\x1b[2J\u202eevil\u009b1m"
	last := &chat.Entry{Incoming: true, Peer: testKey(1), From: testKey(1), PeerHandle: evil, Body: []byte(evil + "\nline two"), SentAt: m.cfg.Now(), Trust: chat.TrustRequest}
	cv := conversation{Peer: testKey(1), Handle: evil, Request: true, Last: last}
	m.Update(listMsg{convs: []conversation{cv}})
	m.pane = newPane(cv)
	m.Update(paneMsg{conv: cv, entries: []*chat.Entry{last}})
	raw := m.View().Content
	for _, bad := range []string{"\x1b]", "\x1b[2J", "\u202e", "\u009b", "\x07"} {
		if strings.Contains(raw, bad) {
			t.Errorf("the screen holds %q:\n%q", bad, raw)
		}
	}
	if s := screen(m); !strings.Contains(s, "]0;pwned[2Jevil1m") {
		t.Errorf("the text is not shown as text:\n%s", s)
	}
}

// The pane draws only what is visible: with a conversation of hundreds
// of long messages, one frame wraps the last few.
func TestPaneWrapsOnlyWhatIsVisible(t *testing.T) {
	m := testModel(t, 80, 24)
	cv := conversation{Peer: testKey(1), Handle: "bob@kez.test"}
	var es []*chat.Entry
	for i := range maxKept {
		var id chat.MessageID
		id[0], id[1] = byte(i), byte(i>>8)
		es = append(es, &chat.Entry{ID: id, Incoming: true, Peer: testKey(1), From: testKey(1), PeerHandle: "bob@kez.test", Body: []byte(strings.Repeat("word ", 40)), SentAt: m.cfg.Now(), Trust: chat.TrustTrusted, Read: true})
	}
	m.pane = newPane(cv)
	m.Update(paneMsg{conv: cv, entries: es})
	screen(m)
	if n := len(m.pane.cache); n == 0 || n > m.historyHeight() {
		t.Errorf("%d messages wrapped for one frame of %d rows", n, m.historyHeight())
	}
	// A 48 KiB message without a space is cut into lines once.
	huge := &chat.Entry{Incoming: true, Peer: testKey(1), From: testKey(1), Body: []byte(strings.Repeat("y", chat.MaxBodySize-3) + "END"), SentAt: m.cfg.Now(), Trust: chat.TrustTrusted}
	m.Update(entryMsg{huge})
	if s := screen(m); !strings.Contains(s, "yEND") {
		t.Errorf("the huge message's end is not at the bottom:\n%s", s)
	}
}

// A flagged contact's conversation shows the banner with the safety
// number, and Enter sends nothing.
func TestFlaggedBlocksSending(t *testing.T) {
	m := testModel(t, 80, 24)
	cv := conversation{Peer: testKey(1), Handle: "bob@kez.test", Flag: chat.FlagKeyChanged}
	m.Update(listMsg{convs: []conversation{cv}})
	m.pane = newPane(cv)
	m.pane.contact = &chat.Contact{Handle: cv.Handle, Key: testKey(1), Flag: chat.FlagKeyChanged, FlagKey: testKey(2)}
	m.setFocus(focusCompose)
	m.Update(tea.KeyPressMsg{Code: 'h', Text: "h"})
	if _, cmd := m.Update(tea.KeyPressMsg{Code: tea.KeyEnter}); cmd != nil {
		t.Error("Enter on a flagged conversation returned a command")
	}
	s := screen(m)
	sn := strings.Fields(kez.SafetyNumber(m.cfg.Me, testKey(2)))
	for _, want := range []string{"KEY CHANGED", sn[0], "Sending is blocked", "Not sent"} {
		if !strings.Contains(s, want) {
			t.Errorf("the screen lacks %q:\n%s", want, s)
		}
	}
	if m.compose.Value() != "" {
		t.Errorf("keys went into the disabled box: %q", m.compose.Value())
	}
}

// States of sent messages are words.
func TestStateWords(t *testing.T) {
	m := testModel(t, 80, 24)
	now := m.cfg.Now()
	for _, c := range []struct {
		e    chat.Entry
		conn string
		want string
	}{
		{chat.Entry{State: chat.StatePending}, "○ offline", "sent, waiting for NATS"},
		{chat.Entry{State: chat.StatePending}, "● online", "sending…"},
		{chat.Entry{State: chat.StateSent}, "● online", "✓ sent"},
		{chat.Entry{State: chat.StateSent, DeliveredAt: now}, "● online", "✓✓ delivered"},
		{chat.Entry{State: chat.StateSent, DeliveredAt: now, ReadAt: now}, "● online", "✓✓ read"},
		{chat.Entry{State: chat.StateFailed}, "● online", "✗ failed"},
		{chat.Entry{Incoming: true}, "● online", ""},
	} {
		m.conn1 = c.conn
		if got := m.stateWord(&c.e); got != c.want {
			t.Errorf("%+v while %s: %q, want %q", c.e, c.conn, got, c.want)
		}
	}
}

// The backoff between attempts to go online grows to 30 s, jittered.
func TestBackoff(t *testing.T) {
	for attempt, base := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 5: 16 * time.Second, 6: 30 * time.Second, 40: 30 * time.Second} {
		for range 50 {
			if d := backoff(attempt); d < base*3/4 || d >= base*5/4 {
				t.Fatalf("attempt %d: %v, want within 25%% of %v", attempt, d, base)
			}
		}
	}
}
