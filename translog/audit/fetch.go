package audit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/kez-lat/kez-chat/ratelimit"
)

// maxWait bounds one wait a server's 429 asks for: a longer one fails the
// audit with the server's *ratelimit.Error.
const maxWait = 15 * time.Minute

// wait blocks for d or until ctx is done. Tests replace it to move a fake
// clock instead.
var wait = func(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// waitOut waits out a 429 answer rl, or returns it when it asks for too
// long.
func (a *auditor) waitOut(ctx context.Context, what string, rl *ratelimit.Error) error {
	d := max(rl.RetryAfter, time.Second)
	if d > maxWait {
		return fmt.Errorf("audit: %s: %w", what, rl)
	}
	a.log.Info("audit: the server asks to wait", "what", what, "retry_after", d)
	return wait(ctx, d)
}

// get fetches path (under the server's base URL) and returns its body of
// at most limit bytes, waiting out 429 answers. A 404 matches
// os.ErrNotExist (what tessera's fetchers report for a missing file).
func (a *auditor) get(ctx context.Context, path string, limit int64) ([]byte, error) {
	for {
		body, rl, err := a.getOnce(ctx, path, limit)
		if rl == nil {
			return body, err
		}
		if err := a.waitOut(ctx, path, rl); err != nil {
			return nil, err
		}
	}
}

func (a *auditor) getOnce(ctx context.Context, path string, limit int64) ([]byte, *ratelimit.Error, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.server+path, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("audit: %w", err)
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: reading %s: %w", ErrUnreachable, path, err)
	}
	switch {
	case resp.StatusCode == http.StatusOK && int64(len(body)) > limit:
		return nil, nil, &AnswerError{Path: path, StatusCode: resp.StatusCode, Reason: fmt.Sprintf("over %d bytes", limit)}
	case resp.StatusCode == http.StatusOK:
		return body, nil, nil
	case resp.StatusCode == http.StatusTooManyRequests:
		return nil, ratelimit.FromResponse(resp, body, a.now()), nil
	case resp.StatusCode == http.StatusNotFound:
		return nil, nil, &AnswerError{Path: path, StatusCode: resp.StatusCode, Reason: "not found", err: os.ErrNotExist}
	case resp.StatusCode == http.StatusBadGateway, resp.StatusCode == http.StatusServiceUnavailable, resp.StatusCode == http.StatusGatewayTimeout:
		return nil, nil, fmt.Errorf("%w: %s answered %d", ErrUnreachable, path, resp.StatusCode)
	}
	return nil, nil, &AnswerError{Path: path, StatusCode: resp.StatusCode, Reason: http.StatusText(resp.StatusCode)}
}

// ErrUnreachable reports that the sig-server could not be reached or
// answered with a gateway or availability error (502, 503, 504): the
// audit may be run again later.
var ErrUnreachable = errors.New("audit: the sig-server is unreachable")

// AnswerError is an answer of the sig-server the audit cannot use: an
// unexpected status, or a body over its bound. A 404 matches
// os.ErrNotExist.
type AnswerError struct {
	Path       string // the path asked for
	StatusCode int
	Reason     string
	err        error
}

// Error names the path and what was wrong.
func (e *AnswerError) Error() string {
	return fmt.Sprintf("audit: GET %s: %d, %s", e.Path, e.StatusCode, e.Reason)
}

// Unwrap returns os.ErrNotExist for a 404.
func (e *AnswerError) Unwrap() error { return e.err }
