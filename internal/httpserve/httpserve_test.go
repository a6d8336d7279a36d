package httpserve

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/httpjson"
	"github.com/prometheus/client_golang/prometheus"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestWrapEndpointsMetricsAndLogs(t *testing.T) {
	app := http.NewServeMux()
	app.HandleFunc("GET /v1/things/{id}", func(w http.ResponseWriter, r *http.Request) {
		httpjson.Write(w, http.StatusOK, map[string]string{"id": r.PathValue("id")})
	})
	app.HandleFunc("POST /v1/things", func(w http.ResponseWriter, r *http.Request) {
		httpjson.Error(w, http.StatusUnprocessableEntity, "no")
	})
	var ready atomic.Pointer[error]
	var logs bytes.Buffer
	reg := prometheus.NewRegistry()
	h := Wrap(app, Options{
		Ready: func(context.Context) error {
			if e := ready.Load(); e != nil {
				return *e
			}
			return nil
		},
		Registry: reg,
		Logger:   slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)

	if code, body := get(t, srv.URL+"/healthz"); code != 200 || !strings.Contains(body, "ok") {
		t.Fatalf("healthz: %d %s", code, body)
	}
	if code, _ := get(t, srv.URL+"/readyz"); code != 200 {
		t.Fatalf("readyz: %d", code)
	}
	notReady := errors.New("database is closed")
	ready.Store(&notReady)
	if code, body := get(t, srv.URL+"/readyz"); code != 503 || !strings.Contains(body, `"error":"not ready: database is closed"`) {
		t.Fatalf("readyz when not ready: %d %s", code, body)
	}
	for _, id := range []string{"a", "b", "c"} {
		if code, _ := get(t, srv.URL+"/v1/things/"+id); code != 200 {
			t.Fatal(code)
		}
	}
	resp, err := http.Post(srv.URL+"/v1/things", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if code, _ := get(t, srv.URL+"/nowhere"); code != 404 {
		t.Fatalf("unknown path: %d", code)
	}
	code, metrics := get(t, srv.URL+"/metrics")
	if code != 200 {
		t.Fatal(code)
	}
	for _, want := range []string{
		`kez_http_requests_total{code="200",method="GET",route="GET /v1/things/{id}"} 3`,
		`kez_http_requests_total{code="422",method="POST",route="POST /v1/things"} 1`,
		`kez_http_requests_total{code="503",method="GET",route="GET /readyz"} 1`,
		`kez_http_requests_total{code="404",method="GET",route="other"} 1`,
		`kez_http_request_duration_seconds_count{method="GET",route="GET /v1/things/{id}"} 3`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if !strings.Contains(logs.String(), `"path":"/v1/things/b"`) || !strings.Contains(logs.String(), `"status":422`) {
		t.Errorf("request log lacks entries: %s", logs.String())
	}
	// A second Wrap on the same registry shares the metrics.
	Wrap(app, Options{Registry: reg})
}

func TestServeGracefulShutdown(t *testing.T) {
	inHandler := make(chan struct{})
	release := make(chan struct{})
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(inHandler)
		<-release
		httpjson.Write(w, http.StatusOK, map[string]string{"done": "yes"})
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrc := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- ListenAndServe(ctx, "127.0.0.1:0", Wrap(app, Options{Logger: slog.New(slog.DiscardHandler)}), slog.New(slog.DiscardHandler), func(a net.Addr) { addrc <- a })
	}()
	addr := <-addrc
	type result struct {
		code int
		body string
		err  error
	}
	resc := make(chan result, 1)
	go func() {
		resp, err := http.Get("http://" + addr.String() + "/slow")
		if err != nil {
			resc <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		resc <- result{code: resp.StatusCode, body: string(b)}
	}()
	<-inHandler
	cancel() // like SIGTERM: stop accepting, finish the request in flight
	// New connections are refused once the listener is closed.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr.String(), time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("still accepting connections after cancel")
		}
		time.Sleep(10 * time.Millisecond) // polling a real listener with a deadline
	}
	close(release)
	r := <-resc
	if r.err != nil || r.code != 200 || !strings.Contains(r.body, "yes") {
		t.Fatalf("in-flight request: %+v", r)
	}
	if err := <-done; err != nil {
		t.Fatalf("Serve returned %v", err)
	}
}

func TestListenError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = ListenAndServe(context.Background(), ln.Addr().String(), http.NotFoundHandler(), slog.New(slog.DiscardHandler), nil)
	if err == nil || !strings.Contains(err.Error(), "listening on") {
		t.Fatalf("got %v", err)
	}
}

// A request that never ends (a client trickling its upload, a handler
// stuck) cannot hold the server past its drain timeout: ServeTimeout
// gives up on it and says so.
func TestServeTimeoutBoundsShutdown(t *testing.T) {
	inHandler, stuck := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(stuck) })
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(inHandler)
		<-stuck
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- ServeTimeout(ctx, ln, app, slog.New(slog.DiscardHandler), 50*time.Millisecond) }()
	go func() {
		if resp, err := http.Get("http://" + ln.Addr().String() + "/stuck"); err == nil {
			resp.Body.Close()
		}
	}()
	<-inHandler
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v, want the drain timeout", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a stuck request held the server 30 s past a 50 ms drain timeout")
	}
}
