package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/bench"
)

// The whole tool at its smallest runs in bench's TestSmoke; here only the
// flags and the output forms, with the one group that needs no stack.
func TestRunSigchainsJSON(t *testing.T) {
	var out, errb bytes.Buffer
	code, err := run(context.Background(), []string{"--only", "sigchains", "--chain-links", "3", "--duration", "10ms", "--rounds", "1", "--json"}, &out, &errb)
	if err != nil || code != 0 {
		t.Fatalf("exit %d, %v\n%s", code, err, errb.String())
	}
	var rep bench.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if len(rep.Figures) != 1 || rep.Figures[0].Group != "sigchains" || rep.Figures[0].Value <= 0 || rep.Figures[0].Base <= 0 {
		t.Errorf("figures: %+v", rep.Figures)
	}
}

func TestRunTable(t *testing.T) {
	var out, errb bytes.Buffer
	code, err := run(context.Background(), []string{"--only", "sigchains", "--chain-links", "3", "--duration", "10ms", "--rounds", "1"}, &out, &errb)
	if err != nil || code != 0 {
		t.Fatalf("exit %d, %v\n%s", code, err, errb.String())
	}
	for _, want := range []string{"figure", "baseline", "ratio", "target", "ed25519.Verify"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the table lacks %q:\n%s", want, out.String())
		}
	}
}

func TestRunRejects(t *testing.T) {
	for _, args := range [][]string{
		{"--sizes", "big"},
		{"--nats", "nats://127.0.0.1:1"},
		{"--only", "nope"},
		{"extra"},
		{"--no-such-flag"},
		{"--only", "sigchains", "--flood-rate", "0"},
		{"--only", "sigchains", "--recipient-devices", "0"},
		{"--only", "sigchains", "--sender-devices", "33"},
		{"--only", "sigchains", "--revocations", "-1", "--revoke-wait", "0s"},
		{"--only", "log", "--log-appenders", "0"},
		{"--only", "log", "--log-entries", "-5"},
		{"--only", "log", "--log-checkpoint-interval", "10ms"},
		{"--only", "log", "--log-batch-age", "-1s"},
		{"--only", "log", "--log-links", "300"},
	} {
		var out, errb bytes.Buffer
		if code, err := run(context.Background(), args, &out, &errb); code == 0 || err == nil && !strings.Contains(errb.String(), "flag") {
			t.Errorf("%q: exit %d, %v", args, code, err)
		}
	}
}

// The log group's flags reach the run: its four figures, the sizes asked
// for in the report's config.
func TestRunLogFlags(t *testing.T) {
	var out, errb bytes.Buffer
	code, err := run(context.Background(), []string{"--only", "log", "--json", "--chain-links", "2", "--duration", "10ms", "--rounds", "1",
		"--log-entries", "20", "--log-appenders", "2", "--log-links", "1", "--log-latency-appends", "1",
		"--log-checkpoint-interval", "100ms", "--log-batch-age", "5ms"}, &out, &errb)
	if err != nil || code != 0 {
		t.Fatalf("exit %d, %v\n%s", code, err, errb.String())
	}
	var rep bench.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	c := rep.Config
	if c.LogEntries != 20 || c.LogAppenders != 2 || c.LogLinks != 1 || c.LogLatencyAppends != 1 || c.LogCheckpointInterval != 100*time.Millisecond || c.LogBatchMaxAge != 5*time.Millisecond {
		t.Errorf("config %+v", c)
	}
	if len(rep.Figures) != 4 {
		t.Fatalf("figures: %+v", rep.Figures)
	}
	for _, f := range rep.Figures {
		if f.Group != "log" || f.Value <= 0 || f.Base <= 0 {
			t.Errorf("figure %+v", f)
		}
	}
	if f := rep.Figures[1]; !strings.Contains(f.Note, "a checkpoint every 100ms, batches up to 5ms old") {
		t.Errorf("the append figure's note: %s", f.Note)
	}
}
