package bench

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestLog runs the log group at the smallest size: real sig-servers in
// process over SQLite stores, one with a tessera log, and an audit of it.
// It checks that every figure and its baseline were measured, never a
// speed: the machine is shared.
func TestLog(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := Smoke()
	cfg.Only = []string{"log"}
	cfg.LogCheckpointInterval = 100 * time.Millisecond // a quicker test; the default is measured by kez-bench
	rep, err := Run(ctx, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Figures) != 4 {
		t.Fatalf("%d figures, want 4: %+v", len(rep.Figures), rep.Figures)
	}
	for _, f := range rep.Figures {
		if f.Group != "log" || !(f.Value > 0) || !(f.Base > 0) || f.Skipped != "" {
			t.Errorf("%s %s: value %v, baseline %s %v, skipped %q: want both measured", f.Group, f.Name, f.Value, f.Baseline, f.Base, f.Skipped)
		}
	}
	if f := rep.Figures[0]; !strings.Contains(f.Name, "log of 1,0") || !strings.Contains(f.Baseline, "5 links") {
		t.Errorf("the proof was not checked against a log of the configured size and the chain: %s vs %s", f.Name, f.Baseline)
	}
	if f := rep.Figure("log", "sig-server appends with the log, 4 appenders"); f == nil || f.Pass == nil || f.Target != logAppendTarget {
		t.Errorf("the append figure has no verdict against %v: %+v", logAppendTarget, f)
	} else if !strings.Contains(f.Note, "a checkpoint every 100ms") {
		t.Errorf("the append figure does not say the checkpoint interval: %s", f.Note)
	}
	// Every entry the appends wrote was audited: the eldest and the
	// rounds' links of each appender's chain, and the two timed chains.
	want := cfg.LogAppenders*(1+cfg.LogLinks*cfg.Rounds) + 1 + cfg.LogLatencyAppends
	if f := rep.Figures[3]; !strings.Contains(f.Name, "audit of the log (") || !strings.Contains(f.Name, fmt.Sprintf("(%d entries, %d chains)", want, cfg.LogAppenders+1)) {
		t.Errorf("audit figure %q, want %d entries of %d chains", f.Name, want, cfg.LogAppenders+1)
	}
}
