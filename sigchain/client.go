package sigchain

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/ratelimit"
	"github.com/kez-lat/kez-chat/translog"
)

// ErrUnreachable reports that the sig-server could not be reached or
// answered with a gateway or availability error (502, 503, 504). Retrying
// later may help.
var ErrUnreachable = errors.New("sigchain: the sig-server is unreachable")

// ServerError is any other error answer of the sig-server. A 400 or 413
// matches [ErrMalformed], a 422 matches [ErrInvalid]; a 413 with the
// reason [ReasonChainLinks] or [ReasonChainBytes] matches [ErrChainFull]
// instead.
type ServerError struct {
	StatusCode int
	Message    string // the server's "error" text
	Reason     string // the server's "reason", if any
}

// Error names the status and quotes the server's message.
func (e *ServerError) Error() string {
	return fmt.Sprintf("sigchain: the sig-server answered %d %s: %s", e.StatusCode, http.StatusText(e.StatusCode), e.Message)
}

// Is matches [ErrMalformed] for 400, 413 and 415, [ErrChainFull] for a
// 413 with a cap's reason, [ErrInvalid] for 422 and [ErrStalePrekey] for
// a 409 with the reason [ReasonPrekeyNotNewer]. An answer with the
// reason [ReasonDeviceKnown], [ReasonDeviceRevoked], [ReasonLinkExpired]
// or [ReasonLinkNotYetValid] also matches [ErrDeviceKnown],
// [ErrDeviceRevoked], [ErrLinkExpired] or [ErrLinkNotYetValid].
func (e *ServerError) Is(target error) bool {
	if r := reasonErrors[e.Reason]; r != nil && target == r {
		return true
	}
	if e.StatusCode == http.StatusRequestEntityTooLarge && (e.Reason == ReasonChainLinks || e.Reason == ReasonChainBytes) {
		return target == ErrChainFull
	}
	if e.StatusCode == http.StatusConflict && e.Reason == ReasonPrekeyNotNewer {
		return target == ErrStalePrekey
	}
	switch e.StatusCode {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType:
		return target == ErrMalformed
	case http.StatusUnprocessableEntity:
		return target == ErrInvalid
	}
	return false
}

// reasonErrors are the errors that refusals with these reasons match.
var reasonErrors = map[string]error{
	ReasonDeviceKnown:     ErrDeviceKnown,
	ReasonDeviceRevoked:   ErrDeviceRevoked,
	ReasonLinkExpired:     ErrLinkExpired,
	ReasonLinkNotYetValid: ErrLinkNotYetValid,
}

// maxResponse bounds one GET response: a full page of maximum-size links
// plus the JSON around them.
const maxResponse = MaxLinksPerResponse*(MaxLinkSize+1) + 4096

// Client talks to a sig-server. The zero value is not usable: set BaseURL.
// A Client is safe for concurrent use.
type Client struct {
	// BaseURL is the sig-server's base URL, e.g. "http://127.0.0.1:8081"
	// (KEZ_SIG_SERVER).
	BaseURL string
	// HTTPClient is used for requests; nil means http.DefaultClient.
	HTTPClient *http.Client
	// VerifyOptions are passed to [Verify] and [State.Extend] by
	// [Client.FetchVerified], e.g. [WithClock].
	VerifyOptions []VerifyOption
	// Log, if set, checks that the head of every chain fetched is in the
	// sig-server's transparency log (docs/spec/translog.md): [Client.Fetch]
	// passes the page that reaches the head to [translog.Monitor.CheckHead]
	// with BaseURL as the server. nil: heads are not checked (a server
	// is trusted to show everyone the same chain).
	Log *translog.Monitor
}

func (c *Client) httpClient() *http.Client {
	if c.HTTPClient != nil {
		return c.HTTPClient
	}
	return http.DefaultClient
}

func (c *Client) chainURL(key kez.PublicKey) string {
	return c.base() + wire.ChainsPath + url.PathEscape(key.String())
}

// do sends req and returns the body of a 2xx answer, or the error the
// status maps to.
func (c *Client) do(req *http.Request, limit int64) ([]byte, int, error) {
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, resp.StatusCode, fmt.Errorf("%w: reading the answer: %w", ErrUnreachable, err)
	}
	if int64(len(body)) > limit {
		return nil, resp.StatusCode, fmt.Errorf("sigchain: the sig-server's answer is over %d bytes", limit)
	}
	if resp.StatusCode/100 == 2 {
		return body, resp.StatusCode, nil
	}
	var e struct {
		Error     string `json:"error"`
		Reason    string `json:"reason"`
		HeadSeqno uint64 `json:"head_seqno"`
		Head      string `json:"head"`
	}
	if json.Unmarshal(body, &e) != nil || e.Error == "" {
		e.Error = strings.TrimSpace(string(body[:min(len(body), 200)]))
	}
	switch {
	case resp.StatusCode == http.StatusNotFound && e.Reason == ReasonNoPrekey:
		return nil, resp.StatusCode, fmt.Errorf("%w: %s", ErrNoPrekey, e.Error)
	case resp.StatusCode == http.StatusNotFound && e.Reason == ReasonNoLinkRequest:
		return nil, resp.StatusCode, fmt.Errorf("%w: %s", ErrNoLinkRequest, e.Error)
	case resp.StatusCode == http.StatusNotFound && e.Reason == ReasonNoDevice:
		return nil, resp.StatusCode, fmt.Errorf("%w: %s", ErrNoDevice, e.Error)
	case resp.StatusCode == http.StatusConflict && (e.Reason == ReasonPrekeyNotNewer || e.Reason == ReasonDeviceKnown):
		return nil, resp.StatusCode, &ServerError{StatusCode: resp.StatusCode, Message: e.Error, Reason: e.Reason}
	}
	switch resp.StatusCode {
	case http.StatusNotFound:
		return nil, resp.StatusCode, fmt.Errorf("%w: %s", ErrNotFound, e.Error)
	case http.StatusConflict:
		ce := &ConflictError{Head: Head{Seqno: e.HeadSeqno}}
		if e.HeadSeqno > 0 {
			id, err := ParseID(e.Head)
			if err != nil {
				return nil, resp.StatusCode, fmt.Errorf("sigchain: the sig-server's conflict answer has a bad head: %w", err)
			}
			ce.Head.ID = id
		}
		return nil, resp.StatusCode, ce
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return nil, resp.StatusCode, fmt.Errorf("%w: %d %s", ErrUnreachable, resp.StatusCode, e.Error)
	case http.StatusTooManyRequests:
		rl := ratelimit.FromResponse(resp, body, time.Now())
		if e.Reason == ReasonLinkRequests {
			return nil, resp.StatusCode, fmt.Errorf("sigchain: the sig-server refused: %w (%w)", rl, ErrLinkRequestsFull)
		}
		return nil, resp.StatusCode, fmt.Errorf("sigchain: the sig-server refused: %w", rl)
	}
	return nil, resp.StatusCode, &ServerError{StatusCode: resp.StatusCode, Message: e.Error, Reason: e.Reason}
}

// Append sends one signed link. It returns nil once the server has stored
// it (also when the identical link was already stored), a *[ConflictError]
// when the chain's head moved, or another error: [ErrChainFull] (the
// chain is at the server's cap), [ErrRateLimited] (a *[RateLimitedError]
// with the server's Retry-After), [ServerError] (a 422 also matches
// [ErrInvalid]; one refusing an add_device link matches [ErrDeviceKnown]
// for a device the server knows, or [ErrLinkExpired] when the device's
// request expired too long ago), [ErrUnreachable].
func (c *Client) Append(ctx context.Context, link *Link) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.chainURL(link.Key())+"/links", bytes.NewReader(link.Bytes()))
	if err != nil {
		return fmt.Errorf("sigchain: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	_, _, err = c.do(req, 4096)
	return err
}

type chainPage struct {
	Key       string  `json:"key"`
	HeadSeqno uint64  `json:"head_seqno"`
	Head      string  `json:"head"`
	Links     []*Link `json:"links"`
	// Log is the inclusion proof of the head's log entry, on the page
	// that reaches the head, from a sig-server that keeps a log.
	Log *translog.HeadProof `json:"log"`
}

// Fetch returns the links of key's chain with seqno > since, in order,
// reading as many pages as the server needs. Each link is parsed strictly
// and must be signed by key; nothing else is verified (use
// [Client.FetchVerified]). It returns [ErrNotFound] when the server has no
// chain for key.
//
// With Log set, the page that reaches the head must prove the head is in
// the sig-server's log ([translog.Monitor.CheckHead]), and the last link
// returned must be that head; the errors then wrap translog's
// ([translog.ErrNotLogged], [translog.ErrBadProof], [translog.ErrSplitView],
// [translog.ErrLogKeyChanged], …).
func (c *Client) Fetch(ctx context.Context, key kez.PublicKey, since uint64) ([]*Link, error) {
	var out []*Link
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.chainURL(key)+"?since="+strconv.FormatUint(since, 10), nil)
		if err != nil {
			return nil, fmt.Errorf("sigchain: %w", err)
		}
		body, _, err := c.do(req, maxResponse)
		if err != nil {
			return nil, err
		}
		var p chainPage
		if err := json.Unmarshal(body, &p); err != nil {
			return nil, fmt.Errorf("sigchain: the sig-server's answer is not a chain: %w", err)
		}
		if p.Key != key.String() {
			return nil, fmt.Errorf("sigchain: asked for the chain of %s, the sig-server answered with %q", key, p.Key)
		}
		for _, l := range p.Links {
			if l == nil || l.Key() != key {
				return nil, &LinkError{Seqno: since + 1, Err: fmt.Errorf("%w: the sig-server returned a link not signed by %s", ErrWrongKey, key)}
			}
			if l.Seqno() != since+1 {
				return nil, &LinkError{Seqno: l.Seqno(), Err: fmt.Errorf("%w: the sig-server returned seqno %d where %d was due", ErrBrokenChain, l.Seqno(), since+1)}
			}
			since = l.Seqno()
			out = append(out, l)
		}
		if len(p.Links) == 0 || since >= p.HeadSeqno {
			if err := c.checkHead(ctx, key, &p); err != nil {
				return nil, err
			}
			return out, nil
		}
	}
}

// checkHead checks, with Log set, that the page p reaching the head of
// key's chain proves the head is logged, and that its last link, if it
// has any, is that head.
func (c *Client) checkHead(ctx context.Context, key kez.PublicKey, p *chainPage) error {
	if c.Log == nil || (p.HeadSeqno == 0 && len(p.Links) == 0) {
		return nil // nothing to prove; links under a head of 0 fail below
	}
	if n := len(p.Links); n > 0 {
		last := p.Links[n-1]
		if last.Seqno() != p.HeadSeqno || last.ID().String() != p.Head {
			return fmt.Errorf("sigchain: the sig-server names head %d %q but its last link is %d %s: %w",
				p.HeadSeqno, p.Head, last.Seqno(), last.ID(), translog.ErrBadProof)
		}
	}
	e := translog.Entry{Key: key, Seqno: p.HeadSeqno, ID: p.Head}
	if err := c.Log.CheckHead(ctx, c.base(), e, p.Log); err != nil {
		return fmt.Errorf("sigchain: the head of %s (seqno %d) against the sig-server's log: %w", key, p.HeadSeqno, err)
	}
	return nil
}

// FetchVerified fetches and verifies key's chain. With pinned nil it
// verifies the whole chain. With a pinned state (from an earlier call, or
// rebuilt from stored links) it fetches from the pinned head on, returns
// [ErrRollback] if the server shows a shorter chain or none, [ErrFork] if
// it shows a different link at the pinned seqno, and otherwise verifies
// only the new links with [State.Extend]. Other errors: [ErrNotFound]
// (no chain and nothing pinned), [ErrUnreachable], *[LinkError].
func (c *Client) FetchVerified(ctx context.Context, key kez.PublicKey, pinned *State) (*State, error) {
	if pinned == nil || pinned.Seqno() == 0 {
		links, err := c.Fetch(ctx, key, 0)
		if err != nil {
			return nil, err
		}
		st, err := Verify(links, c.VerifyOptions...)
		if err != nil {
			return nil, err
		}
		if st.Key() != key {
			return nil, fmt.Errorf("%w: asked for the chain of %s, got the chain of %s", ErrWrongKey, key, st.Key())
		}
		return st, nil
	}
	if pinned.Key() != key {
		return nil, fmt.Errorf("sigchain: the pinned state is for %s, not %s", pinned.Key(), key)
	}
	links, err := c.Fetch(ctx, key, pinned.Seqno()-1)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%w: the sig-server has no chain for %s, the pinned head is seqno %d", ErrRollback, key, pinned.Seqno())
	}
	if err != nil {
		return nil, err
	}
	if err := CheckAgainst(pinned.Pin(), links); err != nil {
		return nil, err
	}
	return pinned.Extend(links, c.VerifyOptions...)
}
