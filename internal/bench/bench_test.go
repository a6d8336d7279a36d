package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestSmoke runs every group at the smallest size against a real stack
// (nats-server and kez-chat-server as processes) so that the tool cannot
// rot. It checks only that every figure and its baseline were produced,
// never a speed: the machine is shared.
func TestSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	st, err := StartStack(ctx, StackConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	})
	cfg := Smoke()
	cfg.Croc, cfg.CrocSkip = FindCroc()
	cfg.Progress = func(s string) { t.Log(s) }
	rep, err := Run(ctx, st, cfg)
	if err != nil {
		t.Fatal(err)
	}

	// A second run against the same stack (as against an external one)
	// reuses the registrations.
	if _, err := st.Register(ctx, "kbm", 2, 2); err != nil {
		t.Errorf("registering the same users again: %v", err)
	}

	// Per size: v1 against the floor and raw, p50, p99; sessions against
	// raw, p50, p99, crypto CPU. Then the handshake and its KEM.
	// Devices: the fan-out through chat.Client and in sessions, the link
	// with history and its transfer, the two revocation figures.
	want := map[string]int{"messaging": 8*len(cfg.Sizes) + 2, "devices": 6, "connects": 4, "sigchains": 1, "log": 4, "files": 5, "sources": 1, "memory": 1, "groups": 3}
	got := map[string]int{}
	for _, f := range rep.Figures {
		got[f.Group]++
		if f.Skipped != "" {
			if f.Baseline == "croc" && cfg.Croc == "" {
				t.Logf("%s %s skipped: %s", f.Group, f.Name, f.Skipped)
				continue
			}
			t.Errorf("%s %s vs %s skipped: %s", f.Group, f.Name, f.Baseline, f.Skipped)
			continue
		}
		if !(f.Value > 0) || !(f.Base > 0) {
			t.Errorf("%s %s: value %v, baseline %s %v: want both measured", f.Group, f.Name, f.Value, f.Baseline, f.Base)
		}
		if f.Goal != NoTarget && f.Pass == nil {
			t.Errorf("%s %s has a target but no verdict", f.Group, f.Name)
		}
	}
	for g, n := range want {
		if got[g] != n {
			t.Errorf("group %s: %d figures, want %d", g, got[g], n)
		}
	}

	// The session figures exist, with the targets at 256 B only.
	for _, size := range cfg.Sizes {
		label := sizeLabel(size)
		for _, name := range []string{"session " + label + " 2→1", "session " + label + " p50", "session " + label + " p99", "session " + label + " crypto CPU"} {
			f := rep.Figure("messaging", name)
			switch {
			case f == nil:
				t.Errorf("no figure %q", name)
			case strings.HasSuffix(name, "p99"):
			case (f.Pass != nil) != (size == sessionTargetSize):
				t.Errorf("%s: verdict %v, want one only at %d B", name, f.Pass, sessionTargetSize)
			}
		}
	}
	for _, name := range []string{"session handshake, hybrid, 256 B", "handshake KEM, MLKEM768-X25519"} {
		if rep.Figure("messaging", name) == nil {
			t.Errorf("no figure %q", name)
		}
	}
	if f := rep.Figure("messaging", "session 256 B 2→1"); f != nil && !strings.Contains(f.Note, "kez.v1.send.<receiver>.<sender>") {
		t.Errorf("the session figure's note does not say what the raw baseline is: %s", f.Note)
	}

	for _, name := range []string{
		"chat.Client messages, 3 devices → 5 devices, 256 B", "session messages, 3 devices → 5 devices, 256 B",
		"link a device, 30 messages of history", "link a device, 30 messages of history, transfer",
		"revocation → open connection closed", "revocation → next login refused",
	} {
		if rep.Figure("devices", name) == nil {
			t.Errorf("no figure %q", name)
		}
	}

	for _, name := range []string{
		fmt.Sprintf("a 256 B message to a group of %d (1 device each)", cfg.GroupSize),
		fmt.Sprintf("rekey of a group of %d after a removal", cfg.RekeyMembers), "time for a new member to read",
	} {
		if rep.Figure("groups", name) == nil {
			t.Errorf("no figure %q", name)
		}
	}
	if f := rep.Figure("groups", fmt.Sprintf("rekey of a group of %d after a removal", cfg.RekeyMembers)); f != nil && !strings.Contains(f.Note, "KiB uploaded by the sender") {
		t.Errorf("the rekey figure has no bytes: %s", f.Note)
	}

	t.Run("session rig", func(t *testing.T) { testSessionRig(ctx, t, st) })
	t.Run("devices rig", func(t *testing.T) { testDevicesRig(ctx, t, st) })

	var table, js bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, g := range Groups {
		if !strings.Contains(table.String(), g) {
			t.Errorf("the table lacks group %s:\n%s", g, table.String())
		}
	}
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Figures) != len(rep.Figures) {
		t.Errorf("JSON holds %d figures, want %d", len(back.Figures), len(rep.Figures))
	}
	t.Logf("\n%s", table.String())
}

func TestConfigCheck(t *testing.T) {
	for name, mod := range map[string]func(*Config){
		"unknown group": func(c *Config) { c.Only = []string{"nope"} },
		"no senders":    func(c *Config) { c.Senders = 0 },
		"no handshakes": func(c *Config) { c.Handshakes = 0 },
		"no devices":    func(c *Config) { c.RecipientDevices = 0 },
		"33 devices":    func(c *Config) { c.SenderDevices = 33 },
		"no history":    func(c *Config) { c.HistoryMessages = 0 },
		"no revocation": func(c *Config) { c.Revocations = 0 },
		"no sizes":      func(c *Config) { c.Sizes = nil },
		"huge message":  func(c *Config) { c.Sizes = []int{1 << 20} },
		"short chain":   func(c *Config) { c.ChainLinks = 1 },
		"empty blob":    func(c *Config) { c.BlobSize = 0 },
		"no source cap": func(c *Config) { c.SourcesRate = 0 },
		"no duration":   func(c *Config) { c.Duration = 0 },
		"rekey small":   func(c *Config) { c.RekeyMembers = c.GroupSize + 1 },
		"rekey huge":    func(c *Config) { c.RekeyMembers = 1025 },
		"no group msgs": func(c *Config) { c.GroupMessages = 0 },
		"empty log":     func(c *Config) { c.LogEntries = 0 },
		"no appenders":  func(c *Config) { c.LogAppenders = -1 },
		"no log links":  func(c *Config) { c.LogLinks = 0 },
		"no latency":    func(c *Config) { c.LogLatencyAppends = 0 },
		"claims past":   func(c *Config) { c.Rounds, c.LogLinks = 2, 129 },
		"latency past":  func(c *Config) { c.LogLatencyAppends = 257 },
		"fast log":      func(c *Config) { c.LogCheckpointInterval = 99 * time.Millisecond },
		"negative age":  func(c *Config) { c.LogBatchMaxAge = -time.Millisecond },
	} {
		c := Smoke()
		mod(&c)
		if _, err := Run(context.Background(), nil, c); err == nil {
			t.Errorf("%s: Run accepted the config", name)
		}
	}
	c := Smoke()
	c.Only = []string{"messaging"}
	if _, err := Run(context.Background(), nil, c); err == nil || !strings.Contains(err.Error(), "need a stack") {
		t.Errorf("messaging without a stack: %v", err)
	}
}

func TestAddPlainUser(t *testing.T) {
	conf := "accounts {\n  AUTH { users: [ { nkey: USVC } ] }\n  CHAT {\n    jetstream: enabled\n  }\n  USERS {\n    imports: [\n    ]\n  }\n  SYS {}\n}\n" +
		"authorization {\n  auth_callout {\n    auth_users: [ USVC ]\n  }\n}\n"
	out, err := addPlainUser(conf, "UPLAIN")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"  USERS {\n    users: [ { nkey: UPLAIN } ]\n    imports: [", "auth_users: [ UPLAIN, USVC ]"} {
		if !strings.Contains(out, want) {
			t.Errorf("config lacks %q:\n%s", want, out)
		}
	}
	if _, err := addPlainUser("listen: 1\n", "UPLAIN"); err == nil {
		t.Error("a config of another form was accepted")
	}
}

func TestProcessMemory(t *testing.T) {
	rss, hwm, err := ProcessMemory(osGetpid())
	if err != nil {
		t.Skip("no /proc here:", err)
	}
	if rss <= 0 || hwm < rss {
		t.Errorf("rss %v, hwm %v", rss, hwm)
	}
	if _, _, err := ProcessMemory(-1); err == nil {
		t.Error("a process that cannot exist has memory")
	}
}

func TestNum(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 1.234: "1.23", 12.34: "12.3", 123.4: "123", 1234567: "1,234,567"} {
		if got := num(v); got != want {
			t.Errorf("num(%v) = %q, want %q", v, got, want)
		}
	}
}

func osGetpid() int { return os.Getpid() }

func TestGoals(t *testing.T) {
	for _, c := range []struct {
		goal              Goal
		value, base, want float64
		pass              bool
	}{
		{MinRatio, 5, 10, 0.5, true},
		{MinRatio, 4, 10, 0.5, false},
		{MaxRatio, 13, 10, 1.3, true},
		{MaxRatio, 14, 10, 1.3, false},
		{MaxRatio, 1, 0, 1.3, false}, // no baseline: no ratio to meet
		{MaxValue, 5, 0, 5, true},
		{MaxValue, 5.1, 0, 5, false},
	} {
		f := Figure{Value: c.value, Base: c.base, Goal: c.goal, Target: c.want}
		f.finish()
		if f.Pass == nil || *f.Pass != c.pass {
			t.Errorf("%s %v of %v against %v: pass %v, want %v", c.goal, c.value, c.base, c.want, f.Pass, c.pass)
		}
		if c.goal == MaxRatio && targetText(f) != "≤ 1.30" {
			t.Errorf("target text %q", targetText(f))
		}
	}
}
