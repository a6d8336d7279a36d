package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kez-lat/kez-chat/internal/servercmd"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/sigchain/storetest"
	"github.com/kez-lat/kez-chat/translog"
)

// getJSON GETs url into v (if 200) and returns the status.
func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK && v != nil {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode
}

func info(t *testing.T, url string) *translog.LogInfo {
	t.Helper()
	var i translog.Info
	if status := getJSON(t, url+"/v1/info", &i); status != http.StatusOK {
		t.Fatalf("/v1/info: %d", status)
	}
	return i.Log
}

// The sig-server keeps a log beside its database by default: /v1/info
// names it, an append is logged and its chain's GET proves the head, the
// log's endpoints and metrics are served, and a restart keeps the key.
func TestTransparencyLog(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db := filepath.Join(dir, "sig.db")
	args := []string{"--listen", "127.0.0.1:0", "--log-checkpoint-interval", "100ms"}
	url, stop, logs := start(t, args, map[string]string{"KEZ_SIG_DB": db, "KEZ_SIG_GROUP_DOMAINS": "example.com"})
	li := info(t, url)
	if li == nil || li.Origin != "example.com/sigchain-log" || !strings.HasPrefix(li.Key, "example.com/sigchain-log+") {
		t.Fatalf("/v1/info log: %+v", li)
	}
	if fi, err := os.Stat(filepath.Join(db+".log", "log.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the log key: %v %v", fi, err)
	}
	_, l := eldestLink(t, storetest.Identity(t, 1), "a@example.com")
	c := &sigchain.Client{BaseURL: url}
	if err := c.Append(ctx, l); err != nil {
		t.Fatal(err)
	}
	var page struct {
		Log *translog.HeadProof `json:"log"`
	}
	if status := getJSON(t, url+sigchain.ChainsPath+l.Key().String(), &page); status != 200 || page.Log == nil {
		t.Fatalf("chain GET: %d %+v", status, page)
	}
	m := &translog.Monitor{Pins: translog.NewMemPins(), RequireLog: true}
	if err := m.CheckHead(ctx, url, translog.Entry{Key: l.Key(), Seqno: 1, ID: l.ID().String()}, page.Log); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/v1/log/checkpoint", "/v1/log/tile/entries/000.p/1", "/v1/log/consistency?from=1&to=1"} {
		if status := getJSON(t, url+p, nil); status != 200 {
			t.Errorf("%s: %d", p, status)
		}
	}
	mt := metrics(t, url)
	for _, want := range []string{
		"kez_sig_log_entries_total 1", "kez_sig_log_size 1", "kez_sig_log_append_seconds_count 1",
		`kez_sig_log_requests_total{code="200",endpoint="checkpoint"} 1`,
		`kez_http_limited_total{endpoint="log",reason="ip"} 0`,
	} {
		if !strings.Contains(mt, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if !strings.Contains(logs.String(), "transparency log open") || !strings.Contains(logs.String(), "log_reads_per_ip=1200/1m") {
		t.Errorf("the log is not logged:\n%s", logs)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// Restarted without --group-domains: the key keeps its name.
	url, _, _ = start(t, args, map[string]string{"KEZ_SIG_DB": db})
	if again := info(t, url); again == nil || *again != *li {
		t.Fatalf("after a restart: %+v, want %+v", again, li)
	}
	if status := getJSON(t, url+sigchain.ChainsPath+l.Key().String(), &page); status != 200 || page.Log == nil || page.Log.Index != 0 {
		t.Fatalf("chain GET after a restart: %d %+v", status, page)
	}
}

// The log's flags and environment twins: --no-log (KEZ_SIG_NO_LOG), a
// folder and key of the operator's choosing, --log-reads-per-ip, and
// values that are refused.
func TestTransparencyLogFlags(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		env  map[string]string
	}{
		{[]string{"--no-log"}, nil},
		{nil, map[string]string{"KEZ_SIG_NO_LOG": "true"}},
	} {
		url, _, _ := start(t, append([]string{"--listen", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "sig.db")}, c.args...), c.env)
		if li := info(t, url); li != nil {
			t.Errorf("%v %v: /v1/info names a log %+v", c.args, c.env, li)
		}
		if status := getJSON(t, url+"/v1/log/checkpoint", nil); status != http.StatusNotFound {
			t.Errorf("%v %v: checkpoint %d", c.args, c.env, status)
		}
	}

	logDir, keyFile := filepath.Join(dir, "tlog"), filepath.Join(dir, "keys", "tlog.key")
	url, stop, _ := start(t, []string{"--listen", "127.0.0.1:0", "--db", filepath.Join(dir, "sig.db"), "--log-origin", "log.example.org/kez",
		"--log-reads-per-ip", "2/1h", "--log-checkpoint-interval", "100ms"},
		map[string]string{"KEZ_SIG_LOG_DIR": logDir, "KEZ_SIG_LOG_KEY": keyFile, "KEZ_SIG_LOG_READS_PER_IP": "100/1h"})
	if li := info(t, url); li == nil || li.Origin != "log.example.org/kez" {
		t.Fatalf("/v1/info: %+v", li)
	}
	for _, f := range []string{filepath.Join(logDir, "checkpoint"), filepath.Join(logDir, "index.db"), keyFile} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	info(t, url)
	resp, err := http.Get(url + "/v1/info")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("the 3rd /v1/info with --log-reads-per-ip 2/1h: %d", resp.StatusCode)
	}
	stop()

	for _, c := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--log-checkpoint-interval", "10ms"}, nil, "--log-checkpoint-interval"},
		{nil, map[string]string{"KEZ_SIG_LOG_CHECKPOINT_INTERVAL": "soon"}, "KEZ_SIG_LOG_CHECKPOINT_INTERVAL"},
		{nil, map[string]string{"KEZ_SIG_NO_LOG": "perhaps"}, "KEZ_SIG_NO_LOG"},
		{[]string{"--log-reads-per-ip", "lots"}, nil, "log-reads-per-ip"},
		// The key made above is named log.example.org/kez: another origin is refused.
		{[]string{"--log-dir", logDir, "--log-key", keyFile, "--log-origin", "other.example/kez"}, nil, "--log-key"},
		{[]string{"--log-origin", "has space"}, nil, "--log-key"},
	} {
		err := run(context.Background(), append([]string{"--listen", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "sig.db")}, c.args...),
			func(k string) string { return c.env[k] }, io.Discard, io.Discard, nil)
		var ue servercmd.UsageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v %v: %v, want a usage error naming %s", c.args, c.env, err, c.want)
		}
	}
	// Another key for an existing log folder is refused.
	other := filepath.Join(dir, "other.key")
	err = run(context.Background(), []string{"--listen", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "sig.db"), "--log-dir", logDir, "--log-key", other, "--log-origin", "log.example.org/kez"},
		func(string) string { return "" }, io.Discard, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "another key") {
		t.Errorf("another key for the log: %v", err)
	}
}
