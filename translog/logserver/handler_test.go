package logserver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/ratelimit"
	"github.com/kez-lat/kez-chat/translog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/transparency-dev/tessera/client"
)

// serveTest serves h, stopped by t.Cleanup.
func serveTest(t testing.TB, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

func get(t testing.TB, u string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// appendN appends n entries of keys 100… at once and returns them in
// the log's order.
func appendN(t testing.TB, l *Log, n int) []translog.Entry {
	t.Helper()
	out := make([]translog.Entry, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		e := entry(t, byte(100+i%100), uint64(1+i/100), fmt.Sprint("h", i))
		wg.Go(func() {
			idx, err := l.Append(context.Background(), e)
			if err == nil && idx >= uint64(n) {
				err = fmt.Errorf("index %d of %d entries", idx, n)
			}
			if err != nil {
				errs <- err
				return
			}
			out[idx] = e
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return out
}

// A client reading the log over HTTP with tessera's own client gets the
// checkpoint, builds inclusion and consistency proofs from the served
// tiles that verify, and reads every entry back from the entry bundles.
func TestHandlerServesTheLog(t *testing.T) {
	ctx := context.Background()
	l, reg := openTest(t, t.TempDir())
	base := serveTest(t, l.Handler(Limits{}))

	resp, body := get(t, base+"/v1/info")
	var info translog.Info
	if err := json.Unmarshal(body, &info); err != nil || resp.StatusCode != 200 || info.Log == nil || *info.Log != l.Info() {
		t.Fatalf("/v1/info: %d %s", resp.StatusCode, body)
	}
	resp, body = get(t, base+"/v1/log/checkpoint")
	if resp.StatusCode != 200 || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("/v1/log/checkpoint: %d %v", resp.StatusCode, resp.Header)
	}
	first, err := translog.ParseCheckpoint(body, info.Log.Key)
	if err != nil {
		t.Fatal(err)
	}

	entries := appendN(t, l, 300) // a full tile and bundle, and partial ones
	u, _ := url.Parse(base + "/v1/log/")
	f, err := client.NewHTTPFetcher(u, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := f.ReadCheckpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := translog.ParseCheckpoint(raw, info.Log.Key)
	if err != nil || cp.Size != 300 {
		t.Fatalf("checkpoint after 300 appends: %+v %v", cp, err)
	}
	pb, err := client.NewProofBuilder(ctx, cp.Size, f.ReadTile)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []uint64{0, 1, 255, 256, 299} {
		p, err := pb.InclusionProof(ctx, i)
		if err != nil {
			t.Fatal(err)
		}
		if err := translog.VerifyInclusion(entries[i], i, p, cp); err != nil {
			t.Fatalf("entry %d over HTTP: %v", i, err)
		}
	}
	for b := range uint64(2) {
		bundle, err := client.GetEntryBundle(ctx, f.ReadEntryBundle, b, cp.Size)
		if err != nil {
			t.Fatal(err)
		}
		for j, data := range bundle.Entries {
			if want := entries[b*256+uint64(j)].Marshal(); !bytes.Equal(data, want) {
				t.Fatalf("bundle %d entry %d = %s, want %s", b, j, data, want)
			}
		}
	}
	if first.Size > 0 {
		t.Fatalf("first checkpoint of size %d", first.Size)
	}
	resp, body = get(t, fmt.Sprintf("%s/v1/log/consistency?from=%d&to=%d", base, 200, cp.Size))
	var cons translog.ConsistencyProof
	if err := json.Unmarshal(body, &cons); err != nil || resp.StatusCode != 200 || cons.From != 200 || cons.To != 300 {
		t.Fatalf("consistency: %d %s", resp.StatusCode, body)
	}
	p200, err := l.Consistency(ctx, 200, 300)
	if err != nil || fmt.Sprint(p200.Proof) != fmt.Sprint(cons.Proof) {
		t.Fatalf("HTTP and library consistency proofs differ: %v %v", p200, err)
	}
	resp, _ = get(t, base+"/v1/log/tile/0/000")
	if resp.Header.Get("Cache-Control") != "public, max-age=31536000, immutable" {
		t.Errorf("full tile Cache-Control %q", resp.Header.Get("Cache-Control"))
	}
	resp, _ = get(t, base+"/v1/log/tile/0/001.p/44")
	if resp.StatusCode != 200 || resp.Header.Get("Cache-Control") != "no-cache" {
		t.Errorf("partial tile: %d %q", resp.StatusCode, resp.Header.Get("Cache-Control"))
	}
	if n := requests(t, reg, "tile", "200"); n < 3 {
		t.Errorf("kez_sig_log_requests_total{endpoint=tile,code=200} = %v", n)
	}
	if n := requests(t, reg, "entries", "200"); n < 2 {
		t.Errorf("kez_sig_log_requests_total{endpoint=entries,code=200} = %v", n)
	}
}

// requests returns kez_sig_log_requests_total{endpoint,code}.
func requests(t testing.TB, reg *prometheus.Registry, endpoint, code string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "kez_sig_log_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			if labels["endpoint"] == endpoint && labels["code"] == code {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// Tile paths that leave the grammar, name files outside the log or tiles
// past the published tree are 404s; nothing else of the folder is served.
func TestHandlerTileAbuse(t *testing.T) {
	l, _ := openTest(t, t.TempDir())
	appendN(t, l, 3)
	base := serveTest(t, l.Handler(Limits{}))
	for _, c := range []struct {
		status int
		paths  []string
	}{
		{http.StatusBadRequest, []string{ // not the grammar
			"..%2F..%2Findex.db", "0/..%2f..%2f..%2findex.db", "entries/..%2fcheckpoint", "0/x000/003", "0/3",
			"0/000.p/0", "0/000.p/256", "0/000.p/999999999999999999999", "64/000", "99999999999999999999/000", "log.key",
			"0/x999/x999/x999/x999/x999/x999/x999/999", "0/x018/x446/x744/x073/x709/x551/616",
			"0/x999/x999/x999/x999/x999/x999/999", "%2e%2e/%2e%2e/index.db", ".state/treeState",
		}},
		{http.StatusNotFound, []string{ // past the published tree
			"0/x999/x999/x999/x999/x999/999", "entries/x999/x999/x999/x999/x999/999",
			"0/000", "entries/000", // full ones: the tree has 3 entries
			"0/000.p/4", "entries/000.p/4", "0/001.p/1", "1/000.p/1",
		}},
		// Dot segments are cleaned away by the mux before the handler
		// sees the path (a redirect to a path that is no tile).
		{http.StatusNotFound, []string{"../index.db", "0/000/../../../index.db", "../../../v1/log/checkpoint/../index.db"}},
	} {
		for _, p := range c.paths {
			resp, body := get(t, base+"/v1/log/tile/"+p)
			if resp.StatusCode != c.status {
				t.Errorf("tile/%s: %d %q, want %d", p, resp.StatusCode, body, c.status)
			}
			if bytes.Contains(body, []byte("SQLite")) || bytes.Contains(body, []byte("PRIVATE")) {
				t.Errorf("tile/%s served a file: %q", p, body)
			}
		}
	}
	for _, p := range []string{"0/000.p/3", "entries/000.p/3"} {
		if resp, _ := get(t, base+"/v1/log/tile/"+p); resp.StatusCode != 200 {
			t.Errorf("tile/%s: %d, want 200", p, resp.StatusCode)
		}
	}
	for _, p := range []string{"/v1/log/", "/v1/log/index.db", "/v1/log/.state/treeState", "/v1/log/checkpoint/x"} {
		if resp, body := get(t, base+p); resp.StatusCode != 404 {
			t.Errorf("%s: %d %q, want 404", p, resp.StatusCode, body)
		}
	}
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/log/checkpoint", strings.NewReader("x"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == 200 {
		t.Errorf("POST checkpoint: 200")
	}
}

// Consistency requests outside 0 < from ≤ to ≤ size, or not numbers, are
// 400s.
func TestHandlerConsistencyAbuse(t *testing.T) {
	l, _ := openTest(t, t.TempDir())
	appendN(t, l, 3)
	base := serveTest(t, l.Handler(Limits{}))
	for _, q := range []string{
		"", "from=1", "to=3", "from=0&to=3", "from=0&to=0", "from=3&to=2", "from=1&to=4", "from=4&to=4",
		"from=1&to=18446744073709551615", "from=1&to=18446744073709551616", "from=99999999999999999999999&to=3",
		"from=-1&to=3", "from=1.0&to=3", "from=0x1&to=3", "from=1&to=3&to=2", "from=1&from=2&to=3", "from= 1&to=3", "from=1&to=3%00",
	} {
		resp, body := get(t, base+"/v1/log/consistency?"+q)
		if resp.StatusCode != 400 {
			t.Errorf("consistency?%s: %d %s, want 400", q, resp.StatusCode, body)
		}
	}
	if resp, body := get(t, base+"/v1/log/consistency?from=3&to=3"); resp.StatusCode != 200 || !strings.Contains(string(body), `"proof":[]`) {
		t.Errorf("consistency 3→3: %d %s", resp.StatusCode, body)
	}
}

// A flood of any endpoint from one address is answered 429 with
// Retry-After once its bucket is empty.
func TestHandlerFloods(t *testing.T) {
	l, _ := openTest(t, t.TempDir())
	appendN(t, l, 3)
	now := time.Unix(1e9, 0)
	for _, p := range []string{"/v1/info", "/v1/log/checkpoint", "/v1/log/tile/0/000.p/3", "/v1/log/tile/entries/000.p/3", "/v1/log/consistency?from=1&to=3", "/v1/log/nothing"} {
		h := l.Handler(Limits{ReadsPerIP: ratelimit.Limit{N: 2, Per: time.Hour}, Now: func() time.Time { return now }})
		base := serveTest(t, h)
		for i := range 3 {
			resp, _ := get(t, base+p)
			if i < 2 && resp.StatusCode == http.StatusTooManyRequests {
				t.Errorf("%s: request %d refused", p, i)
			}
			if i == 2 && (resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "") {
				t.Errorf("%s: request %d = %d, Retry-After %q; want 429", p, i, resp.StatusCode, resp.Header.Get("Retry-After"))
			}
		}
		if s := h.Stats()[0]; s.Limited != 1 || s.Endpoint != "log" || s.Reason != "ip" {
			t.Errorf("%s: stats %+v", p, s)
		}
	}
	// A server without a log limits /v1/info the same way.
	var none *Log
	h := none.Handler(Limits{ReadsPerIP: ratelimit.Limit{N: 1, Per: time.Hour}, Now: func() time.Time { return now }})
	base := serveTest(t, h)
	if resp, _ := get(t, base+"/v1/info"); resp.StatusCode != 200 {
		t.Errorf("first /v1/info: %d", resp.StatusCode)
	}
	if resp, _ := get(t, base+"/v1/info"); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("second /v1/info: %d, want 429", resp.StatusCode)
	}
}

// A server that keeps no log says so at /v1/info and has no /v1/log/.
func TestHandlerNoLog(t *testing.T) {
	var none *Log
	base := serveTest(t, none.Handler(Limits{}))
	resp, body := get(t, base+"/v1/info")
	if resp.StatusCode != 200 || string(body) != "{\"log\":null}\n" {
		t.Errorf("/v1/info without a log: %d %q", resp.StatusCode, body)
	}
	for _, p := range []string{"/v1/log/checkpoint", "/v1/log/tile/0/000", "/v1/log/consistency?from=1&to=1"} {
		if resp, _ := get(t, base+p); resp.StatusCode != 404 {
			t.Errorf("%s without a log: %d, want 404", p, resp.StatusCode)
		}
	}
}
