package ratelimit

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestRefuseReachesTheClient serves a limiter over real HTTP: the burst
// passes, then 429 with Retry-After, which the client turns into an
// *Error matching ErrLimited with the same wait; after that wait the
// server lets the next request through.
func TestRefuseReachesTheClient(t *testing.T) {
	c := newClock()
	l := New(Limit{N: 2, Per: time.Minute}, Options{Now: c.Now})
	var ip ClientIP
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ok, wait := l.Allow(ip.Key(r)); !ok {
			Refuse(w, wait, "too many tries from your address")
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	get := func() (*http.Response, []byte) {
		resp, err := http.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	for range 2 {
		if resp, _ := get(); resp.StatusCode != http.StatusNoContent {
			t.Fatalf("within the burst: %d", resp.StatusCode)
		}
	}
	resp, body := get()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "30" {
		t.Fatalf("over the burst: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	e := FromResponse(resp, body, c.Now())
	var as *Error
	if e == nil || !errors.Is(e, ErrLimited) || !errors.As(error(e), &as) || as.RetryAfter != 30*time.Second || as.Message != "too many tries from your address" {
		t.Fatalf("client error %#v", e)
	}
	if s := e.Error(); s != "too many requests, retry after 30s: too many tries from your address" {
		t.Fatalf("message %q", s)
	}
	c.Add(as.RetryAfter)
	if resp, _ := get(); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("after Retry-After: %d", resp.StatusCode)
	}
	if FromResponse(&http.Response{StatusCode: http.StatusOK}, nil, c.Now()) != nil {
		t.Fatal("a 200 became an error")
	}
}

func TestRefuseRoundsUp(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{{0, "1"}, {time.Millisecond, "1"}, {time.Second, "1"}, {1500 * time.Millisecond, "2"}, {6 * time.Minute, "360"}} {
		rec := httptest.NewRecorder()
		Refuse(rec, tc.d, "x")
		if got := rec.Header().Get("Retry-After"); got != tc.want || rec.Code != http.StatusTooManyRequests {
			t.Errorf("%v: %d Retry-After %q, want %q", tc.d, rec.Code, got, tc.want)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"120", 2 * time.Minute, true},
		{" 0 ", 0, true},
		{"Thu, 01 Jan 2026 12:05:00 GMT", 5 * time.Minute, true},
		{"Thu, 01 Jan 2026 11:00:00 GMT", 0, true}, // in the past: no wait
		{"99999999999999999999999", maxRetryAfter, true},
		{"9999999", maxRetryAfter, true},
		{"", 0, false}, {"-5", 0, false}, {"1.5", 0, false}, {"soon", 0, false}, {"12abc", 0, false},
	} {
		got, ok := ParseRetryAfter(tc.in, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseRetryAfter(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
	// Without the header, a KEZ body's retry_after is used.
	resp := &http.Response{StatusCode: http.StatusTooManyRequests, Header: http.Header{}}
	if e := FromResponse(resp, []byte(`{"error":"slow down","retry_after":42}`), now); e.RetryAfter != 42*time.Second || e.Message != "slow down" {
		t.Fatalf("%+v", e)
	}
	if e := FromResponse(resp, []byte("plain text"), now); e.RetryAfter != 0 || e.Message != "plain text" || e.Error() != "too many requests: plain text" {
		t.Fatalf("%+v", e)
	}
}
