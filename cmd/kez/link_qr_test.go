package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/sigchain"
)

// capture returns what the pane shows now, with its colours as escape
// sequences (tmux capture-pane -e), coloured spaces at the ends of lines
// kept (-N): the screen a person looks at.
func (tm *terminal) capture() string {
	tm.t.Helper()
	out, err := exec.Command("tmux", "-S", tm.sock, "capture-pane", "-p", "-e", "-N", "-t", "kez").Output()
	if err != nil {
		tm.t.Fatalf("tmux capture-pane: %v", err)
	}
	return string(out)
}

// qrLinesOf returns the lines of screen that draw a QR code: the coloured
// ones made of half blocks and spaces only.
func qrLinesOf(screen string) []string {
	var lines []string
	for _, l := range strings.Split(screen, "\n") {
		plain := strings.TrimSpace(sgrRE.ReplaceAllString(l, ""))
		if strings.Contains(l, "\x1b[") && strings.Trim(plain, "█▀▄ ") == "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// TestTerminalLinkShowsQR: "kez link" in a real terminal (tmux) draws the
// code as a QR code beside its text. The screen, read back into modules
// and decoded, holds KEZ-LINK: and the same code, black on white whatever
// the terminal's theme; "kez devices add" takes that scanned text and
// approves the device. --no-qr, and output that is not a terminal, draw
// none.
func TestTerminalLinkShowsQR(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au := st.NewUser(t, "alice")
	alice := st.Env(au)
	laptop := with(st.Env(au), "KEZ_HOME", filepath.Join(t.TempDir(), "laptop"))

	tm := startTerminal(t, laptop, "link", "--name", "laptop")
	tm.waitFor("Waiting for the approval")
	screen := tm.capture()
	m := codeRE.FindStringSubmatch(sgrRE.ReplaceAllString(screen, ""))
	if m == nil {
		t.Fatalf("no code on the screen:\n%s", screen)
	}
	code, err := sigchain.ParseLinkCode(m[1])
	if err != nil {
		t.Fatal(err)
	}
	lines := qrLinesOf(screen)
	if len(lines) < 17 {
		t.Fatalf("%d QR lines on the screen:\n%s", len(lines), screen)
	}
	lines = lines[:17]
	// tmux draws the colours kez asked for, the same in a light and a dark
	// theme: black (16) on white (231) of the 256-colour cube.
	for _, l := range lines {
		if !strings.Contains(l, "38;5;16") || !strings.Contains(l, "48;5;231") {
			t.Fatalf("a QR line is not black on white: %q", l)
		}
	}
	rows := modulesOfText(t, lines)
	checkQuietZone(t, rows)
	scanned, err := decodeModules(t, rows)
	if err != nil {
		t.Fatalf("the screen's QR code does not decode: %v\n%s", err, screen)
	}
	if scanned != "KEZ-LINK:"+code.String() {
		t.Fatalf("the QR code holds %q; the text shows %s", scanned, code)
	}
	t.Logf("the screen:\n%s", sgrRE.ReplaceAllString(screen, ""))

	// What a scanner reads approves the device.
	r := mustRun(t, alice, "", "devices", "add", scanned, "--no-history")
	if !strings.Contains(r.stdout, `Added "laptop"`) {
		t.Fatalf("devices add %s:\n%s", scanned, r.stdout)
	}
	tm.waitFor("Passphrase: ")
	tm.typeLine("")
	tm.waitFor(`Type "unencrypted"`)
	tm.typeLine("unencrypted")
	if out := tm.waitFor("[exit "); !strings.Contains(out, "This install is now a device of @alice@kez.test") {
		t.Errorf("link after the approval:\n%s", out)
	}

	// --no-qr: the text alone.
	tm = startTerminal(t, with(laptop, "KEZ_HOME", filepath.Join(t.TempDir(), "tablet")), "link", "--name", "tablet", "--no-qr")
	out := tm.waitFor("Waiting for the approval")
	if strings.ContainsAny(out, "█▀▄") || strings.Contains(out, "QR") || len(qrLinesOf(tm.capture())) != 0 {
		t.Errorf("link --no-qr drew a QR code:\n%s", out)
	}
	if !codeRE.MatchString(out) {
		t.Errorf("link --no-qr shows no code:\n%s", out)
	}

	// Not a terminal: the text alone.
	fastLinkPoll(t)
	_, lout, _ := startLink(t, with(laptop, "KEZ_HOME", filepath.Join(t.TempDir(), "phone")), "phone")
	if s := lout.String(); strings.ContainsAny(s, "█▀▄\x1b") || strings.Contains(s, "QR") {
		t.Errorf("link to a pipe drew a QR code:\n%s", s)
	}
}
