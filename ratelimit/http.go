package ratelimit

import (
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/kez-lat/kez-chat/internal/httpjson"
)

// refusal is the body of a 429 answer.
type refusal struct {
	Error      string `json:"error"`
	RetryAfter int64  `json:"retry_after"` // seconds, as in the header
}

// retrySeconds rounds d up to whole seconds, at least 1.
func retrySeconds(d time.Duration) int64 {
	return max(1, int64(math.Ceil(d.Seconds())))
}

// Refuse answers 429 Too Many Requests with a Retry-After header (whole
// seconds, rounded up, at least 1) and {"error": msg, "retry_after": N}.
func Refuse(w http.ResponseWriter, retryAfter time.Duration, msg string) {
	s := retrySeconds(retryAfter)
	w.Header().Set("Retry-After", strconv.FormatInt(s, 10))
	httpjson.Write(w, http.StatusTooManyRequests, refusal{Error: msg, RetryAfter: s})
}

// ErrLimited reports that a server refused a request because the client
// (its address or its key) sent too many: an HTTP 429. Errors matching it
// are an *[Error] carrying how long to wait.
var ErrLimited = errors.New("too many requests")

// Error is a 429 answer: the server asks the client to wait RetryAfter
// before trying again. It matches [ErrLimited].
type Error struct {
	// RetryAfter is the server's Retry-After; 0 if it gave none.
	RetryAfter time.Duration
	// Message is the server's "error" text.
	Message string
}

// Error says that the server refused and how long to wait.
func (e *Error) Error() string {
	s := "too many requests"
	if e.RetryAfter > 0 {
		s += ", retry after " + e.RetryAfter.String()
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Is matches [ErrLimited].
func (e *Error) Is(target error) bool { return target == ErrLimited }

// maxRetryAfter bounds the wait a server can ask for.
const maxRetryAfter = 7 * 24 * time.Hour

// ParseRetryAfter reads a Retry-After header value: delta-seconds or an
// HTTP date (RFC 9110 §10.2.3), relative to now. It returns false for
// anything else. Waits are at least 0 and at most a week.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if v[0] >= '0' && v[0] <= '9' {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			if errors.Is(err, strconv.ErrRange) && strings.Trim(v, "0123456789") == "" {
				return maxRetryAfter, true
			}
			return 0, false
		}
		if n > uint64(maxRetryAfter/time.Second) {
			return maxRetryAfter, true
		}
		return time.Duration(n) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return min(max(t.Sub(now), 0), maxRetryAfter), true
}

// FromResponse returns the *[Error] of a 429 answer, reading its
// Retry-After header (and, without one, the "retry_after" field of a
// KEZ server's body). body is the answer's body as read; message, when
// not empty, overrides the body's "error" text. It returns nil for any
// other status.
func FromResponse(resp *http.Response, body []byte, now time.Time) *Error {
	if resp.StatusCode != http.StatusTooManyRequests {
		return nil
	}
	var r refusal
	_ = json.Unmarshal(body, &r)
	e := &Error{Message: r.Error}
	if e.Message == "" {
		e.Message = strings.TrimSpace(string(body[:min(len(body), 200)]))
	}
	if d, ok := ParseRetryAfter(resp.Header.Get("Retry-After"), now); ok {
		e.RetryAfter = d
	} else if r.RetryAfter > 0 {
		e.RetryAfter = time.Duration(min(r.RetryAfter, int64(maxRetryAfter/time.Second))) * time.Second
	}
	return e
}
