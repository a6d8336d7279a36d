package group

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

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/ratelimit"
	"github.com/kez-lat/kez-chat/sigchain"
)

// ErrNameTaken reports a create link for a group name in use (409,
// reason [ReasonNameTaken]).
var ErrNameTaken = errors.New("group: the group name is taken")

// ErrTooManyGroups reports a create link refused because its creator
// has created as many groups as the sig-server keeps for one person
// (429, reason [ReasonGroupsPerKey]).
var ErrTooManyGroups = errors.New("group: the creator has as many groups as the sig-server allows")

// ErrGroupFull reports a link refused because the group's chain is as
// large as the sig-server allows (413, reason [ReasonGroupLinks] or
// [ReasonGroupBytes]).
var ErrGroupFull = errors.New("group: the group's chain is as large as the sig-server allows")

// ErrUnreachable reports that the sig-server could not be reached or
// answered with a gateway or availability error (502, 503, 504).
// Retrying later may help.
var ErrUnreachable = errors.New("group: the sig-server is unreachable")

// ErrRateLimited reports a request the sig-server refused with 429
// because the client's address sent too many; errors matching it are a
// *[ratelimit.Error] with the server's Retry-After.
var ErrRateLimited = ratelimit.ErrLimited

// ErrBadAnswer reports a sig-server answer that is not what the API
// promises (links of another group, out of order, or unreadable).
var ErrBadAnswer = errors.New("group: the sig-server's answer is malformed")

// RefusedError is a refusal of the group API other than a conflict: its
// status, reason ([ReasonNotAllowed] etc.) and message.
type RefusedError struct {
	StatusCode int
	Reason     string
	Message    string // the server's "error" text
}

// Error names the status and reason and quotes the server's message.
func (e *RefusedError) Error() string {
	return fmt.Sprintf("group: the sig-server refused (%d %s, %s): %s", e.StatusCode, http.StatusText(e.StatusCode), e.Reason, e.Message)
}

// reasonErrors are the errors that refusals with these reasons match.
var reasonErrors = map[string]error{
	ReasonNotAllowed:       ErrNotAllowed,
	ReasonNotMember:        ErrNotMember,
	ReasonTooManyMembers:   ErrTooManyMembers,
	ReasonDeviceNotAllowed: ErrDeviceNotAllowed,
	ReasonNameTaken:        ErrNameTaken,
	ReasonNoGroup:          ErrNotFound,
	ReasonGroupsPerKey:     ErrTooManyGroups,
	ReasonGroupLinks:       ErrGroupFull,
	ReasonGroupBytes:       ErrGroupFull,
}

// Is matches the error of the refusal's reason ([ErrNotAllowed],
// [ErrNotMember], [ErrTooManyMembers], [ErrDeviceNotAllowed],
// [ErrNameTaken], [ErrNotFound], [ErrTooManyGroups], [ErrGroupFull]), and
// [ErrInvalid] for every 422.
func (e *RefusedError) Is(target error) bool {
	if r := reasonErrors[e.Reason]; r != nil && target == r {
		return true
	}
	return e.StatusCode == http.StatusUnprocessableEntity && target == ErrInvalid
}

// Client talks to the group API of a sig-server. It is safe for
// concurrent use.
type Client struct {
	base string
	hc   *http.Client
}

// NewClient returns a client of the sig-server at base (e.g.
// "https://sig.kez.lat"); hc nil means http.DefaultClient.
func NewClient(base string, hc *http.Client) *Client {
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: strings.TrimRight(base, "/"), hc: hc}
}

// maxAnswer bounds one GET answer: a full page of maximum-size links
// plus the JSON around them.
const maxAnswer = MaxLinksPerResponse*(MaxLinkSize+1) + 4096

// answer is an error answer's body.
type answer struct {
	Error  string   `json:"error"`
	Reason string   `json:"reason"`
	Head   headJSON `json:"head"`
}

// do sends req and returns the body of a 2xx answer, or the error the
// answer maps to.
func (c *Client) do(req *http.Request, limit int64) ([]byte, error) {
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%w: reading the answer: %w", ErrUnreachable, err)
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("%w: the answer is over %d bytes", ErrBadAnswer, limit)
	}
	if resp.StatusCode/100 == 2 {
		return body, nil
	}
	var a answer
	if json.Unmarshal(body, &a) != nil || a.Error == "" {
		a.Error = strings.TrimSpace(string(body[:min(len(body), 200)]))
	}
	switch {
	case resp.StatusCode == http.StatusConflict && a.Reason == ReasonConflict:
		hd, err := a.Head.parse()
		if err != nil {
			return nil, err
		}
		return nil, &ConflictError{Head: hd}
	case resp.StatusCode == http.StatusTooManyRequests && a.Reason == "":
		return nil, fmt.Errorf("group: the sig-server refused: %w", ratelimit.FromResponse(resp, body, time.Now()))
	case resp.StatusCode == http.StatusNotFound && a.Reason == "":
		return nil, fmt.Errorf("%w: the sig-server has no group API (%s)", ErrNotFound, a.Error)
	case resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusGatewayTimeout:
		return nil, fmt.Errorf("%w: %d %s", ErrUnreachable, resp.StatusCode, a.Error)
	}
	return nil, &RefusedError{StatusCode: resp.StatusCode, Reason: a.Reason, Message: a.Error}
}

// parse reads a head of the API.
func (j headJSON) parse() (Head, error) {
	if j.Seqno == 0 {
		return Head{}, nil
	}
	id, err := sigchain.ParseID(j.ID)
	if err != nil {
		return Head{}, fmt.Errorf("%w: its head: %w", ErrBadAnswer, err)
	}
	return Head{Seqno: j.Seqno, ID: id}, nil
}

// Append sends one signed link. It returns nil once the server has
// stored it (also when the identical link was stored already), a
// *[ConflictError] when the group's head moved, or a *[RefusedError]
// matching [ErrNameTaken] (a create link for a name in use),
// [ErrNotFound] (no such group), [ErrInvalid] (the link does not verify
// on the stored chain; also [ErrNotAllowed], [ErrNotMember],
// [ErrDeviceNotAllowed], [ErrTooManyMembers] by reason),
// [ErrTooManyGroups] or [ErrGroupFull]; or [ErrRateLimited],
// [ErrUnreachable].
func (c *Client) Append(ctx context.Context, link *Link) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+GroupsPath, bytes.NewReader(link.Bytes()))
	if err != nil {
		return fmt.Errorf("group: %w", err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	_, err = c.do(req, 4096)
	return err
}

// page is a GET answer.
type page struct {
	Links []json.RawMessage `json:"links"`
	Head  headJSON          `json:"head"`
}

// Fetch returns the exact bytes of the links of the group name with
// seqno > since, in order, reading as many pages as the server needs,
// and the head of the last page. Each link must parse ([ParseLink]),
// be of the group and carry the next seqno, [MaxChainBytes] of links in
// all at most; nothing else is verified
// (see [Client.Load]). Errors: [ErrNotFound] (no such group),
// [ErrBadAnswer], [ErrRateLimited], [ErrUnreachable].
func (c *Client) Fetch(ctx context.Context, name string, since uint64) ([][]byte, Head, error) {
	if err := CheckName(name); err != nil {
		return nil, Head{}, err
	}
	var (
		out  [][]byte
		last cid.Cid
		size int // the links' bytes: at most MaxChainBytes
	)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+GroupsPath+"/"+url.PathEscape(name)+"?since="+strconv.FormatUint(since, 10), nil)
		if err != nil {
			return nil, Head{}, fmt.Errorf("group: %w", err)
		}
		body, err := c.do(req, maxAnswer)
		if err != nil {
			return nil, Head{}, err
		}
		links, id, hd, err := readPage(body, name, since)
		if err != nil {
			return nil, Head{}, err
		}
		for _, l := range links {
			size += len(l)
		}
		if size > MaxChainBytes {
			return nil, Head{}, fmt.Errorf("%w: over %d bytes of links of %s", ErrBadAnswer, MaxChainBytes, name)
		}
		if len(links) > 0 {
			since += uint64(len(links))
			last = id
			out = append(out, links...)
		}
		if len(links) == 0 && since < hd.Seqno {
			return nil, Head{}, fmt.Errorf("%w: no links after %d of %s, whose head is %d", ErrBadAnswer, since, name, hd.Seqno)
		}
		if since >= hd.Seqno {
			if hd.Seqno == since && last.Defined() && !hd.ID.Equals(last) {
				return nil, Head{}, fmt.Errorf("%w: the head %s is not the last link %s", ErrBadAnswer, hd.ID, last)
			}
			return out, hd, nil
		}
	}
}

// readPage reads one GET answer for the links of name after since: the
// links' exact bytes, the ID of the last one, and the page's head. Each
// link must parse, be of name and carry the next seqno, at most the
// head's and [MaxLinks].
func readPage(body []byte, name string, since uint64) ([][]byte, cid.Cid, Head, error) {
	var p page
	if err := json.Unmarshal(body, &p); err != nil {
		return nil, cid.Undef, Head{}, fmt.Errorf("%w: %w", ErrBadAnswer, err)
	}
	hd, err := p.Head.parse()
	if err != nil {
		return nil, cid.Undef, Head{}, err
	}
	if len(p.Links) > MaxLinksPerResponse {
		return nil, cid.Undef, Head{}, fmt.Errorf("%w: %d links in one answer, at most %d", ErrBadAnswer, len(p.Links), MaxLinksPerResponse)
	}
	out := make([][]byte, 0, len(p.Links))
	last := cid.Undef
	for _, raw := range p.Links {
		l, err := ParseLink(raw)
		if err != nil {
			return nil, cid.Undef, Head{}, fmt.Errorf("%w: link %d: %w", ErrBadAnswer, since+1, err)
		}
		if l.Group() != name || l.Seqno() != since+1 || l.Seqno() > hd.Seqno || l.Seqno() > MaxLinks {
			return nil, cid.Undef, Head{}, fmt.Errorf("%w: asked for link %d of %s up to its head %d, got link %d of %s", ErrBadAnswer, since+1, name, hd.Seqno, l.Seqno(), l.Group())
		}
		since, last = l.Seqno(), l.ID()
		out = append(out, l.Bytes())
	}
	return out, last, hd, nil
}

// linkCID is the ID of a link's bytes that parsed before.
func linkCID(b []byte) cid.Cid {
	l, err := ParseLink(b)
	if err != nil {
		return cid.Undef
	}
	return l.ID()
}

// Load fetches and verifies the group name. With pinned nil it verifies
// the whole chain. With a pinned state (from an earlier call, or rebuilt
// from stored links) it fetches from the pinned head on, returns
// [ErrRollback] if the server shows a shorter chain or none, [ErrFork] if
// it shows another link at the pinned seqno, and otherwise verifies only
// the new links ([State.Extend]). check says which devices may sign for
// their person. Other errors: those of [Client.Fetch], and of [Verify].
func (c *Client) Load(ctx context.Context, name string, pinned *State, check DeviceChecker) (*State, error) {
	if pinned == nil || pinned.Seqno() == 0 {
		links, _, err := c.Fetch(ctx, name, 0)
		if err != nil {
			return nil, err
		}
		if len(links) == 0 {
			return nil, fmt.Errorf("%w: the sig-server shows %s without links", ErrBadAnswer, name)
		}
		return Verify(ctx, links, check)
	}
	if pinned.Name() != name {
		return nil, fmt.Errorf("group: the pinned state is of %s, not %s", pinned.Name(), name)
	}
	links, hd, err := c.Fetch(ctx, name, pinned.Seqno()-1)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%w: the sig-server has no group %s, the pinned head is seqno %d", ErrRollback, name, pinned.Seqno())
	}
	if err != nil {
		return nil, err
	}
	if len(links) == 0 || hd.Seqno < pinned.Seqno() {
		return nil, fmt.Errorf("%w: the sig-server's head of %s is seqno %d, the pinned head is seqno %d", ErrRollback, name, hd.Seqno, pinned.Seqno())
	}
	if id := linkCID(links[0]); !id.Equals(pinned.Head()) {
		return nil, fmt.Errorf("%w: the sig-server's link %d of %s is %s, the pinned one %s", ErrFork, pinned.Seqno(), name, id, pinned.Head())
	}
	if len(links) == 1 {
		return pinned, nil
	}
	return pinned.Extend(ctx, links[1:], check)
}
