package callout

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
)

// peeked is what the service reads from a request before checking it, to
// choose the request's lane: nothing in it is trusted. The full check
// (decodeRequest) reads the same bytes again, and every decision is made
// on what it returns.
type peeked struct {
	Exp  int64 `json:"exp"` // when nats-server stops waiting (Unix seconds)
	Nats struct {
		ClientInfo struct {
			Host string `json:"host"`
		} `json:"client_info"`
		ConnectOpts struct {
			Nkey string `json:"nkey"`
		} `json:"connect_opts"`
	} `json:"nats"`
}

var errPeek = errors.New("callout: not a JWT")

// peek decodes the claims of a request JWT without verifying its
// signature or anything else.
func peek(token []byte) (peeked, error) {
	var p peeked
	_, rest, ok := bytes.Cut(token, []byte{'.'})
	if !ok {
		return p, errPeek
	}
	payload, _, ok := bytes.Cut(rest, []byte{'.'})
	if !ok || len(payload) > MaxRequestSize {
		return p, errPeek
	}
	raw := make([]byte, base64.RawURLEncoding.DecodedLen(len(payload)))
	n, err := base64.RawURLEncoding.Decode(raw, payload)
	if err != nil {
		return p, errPeek
	}
	if err := json.Unmarshal(raw[:n], &p); err != nil {
		return peeked{}, errPeek
	}
	return p, nil
}
