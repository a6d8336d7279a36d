package handles

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/kez-lat/kez-chat/kez"
)

// Claim windows: a claim older than MaxClaimAge or more than MaxClaimSkew
// in the future is refused with [ErrClaimTime].
const (
	MaxClaimAge  = 5 * time.Minute
	MaxClaimSkew = 2 * time.Minute
)

// MaxClaimBody bounds the claim request body a server reads.
const MaxClaimBody = 4 << 10

// Claim is the body of POST /v1/handles: proof that the holder of Key
// wants Handle on the server whose domain is the handle's domain. Make one
// with [NewClaim]; check one with [Claim.Verify].
type Claim struct {
	Handle    string `json:"handle"`    // canonical form, "alice@kez.lat"
	Key       string `json:"key"`       // the claiming key, nkey text "U…"
	Timestamp int64  `json:"timestamp"` // Unix seconds when the claim was signed
	Signature string `json:"signature"` // base64url (no padding) ed25519 signature of ClaimStatement under kez.ContextHandleClaim
}

// ClaimStatement returns the exact text a claim signs (docs/spec/handles.md):
//
//	kez/v1 handle claim\n
//	handle: alice@kez.lat\n
//	server: kez.lat\n
//	key: U…\n
//	timestamp: 1767225600\n
//
// server is the domain of the server the claim is addressed to.
func ClaimStatement(h Handle, server string, key kez.PublicKey, ts int64) []byte {
	b := make([]byte, 0, 160)
	b = append(b, kez.ContextHandleClaim+"\n"...)
	b = append(b, "handle: "+h.String()+"\n"...)
	b = append(b, "server: "+server+"\n"...)
	b = append(b, "key: "+key.String()+"\n"...)
	b = append(b, "timestamp: "...)
	b = strconv.AppendInt(b, ts, 10)
	return append(b, '\n')
}

// NewClaim signs a claim of h by signer, addressed to the server of h's
// domain, at time now.
func NewClaim(signer kez.Signer, h Handle, now time.Time) (*Claim, error) {
	if h.IsZero() {
		return nil, fmt.Errorf("%w: no handle", ErrBadClaim)
	}
	key := signer.PublicKey()
	ts := now.Unix()
	sig, err := signer.Sign(kez.ContextHandleClaim, ClaimStatement(h, h.Domain, key, ts))
	if err != nil {
		return nil, fmt.Errorf("handles: signing the claim: %w", err)
	}
	return &Claim{
		Handle:    h.String(),
		Key:       key.String(),
		Timestamp: ts,
		Signature: base64.RawURLEncoding.EncodeToString(sig),
	}, nil
}

// Verify checks a claim received by the server of domain at time now,
// parsing the handle with rules. It returns the handle and key the claim
// proves, or an error: a *[HandleError] for a bad handle, [ErrBadClaim]
// for a malformed claim or a claim for another domain, [ErrClaimTime] for
// a stale or future timestamp, [ErrBadSignature] for a signature that does
// not verify. Reserved names are not checked here (see [CheckClaimable]).
func (c *Claim) Verify(rules Rules, domain string, now time.Time) (Handle, kez.PublicKey, error) {
	rules.DefaultDomain = "" // a claim names its domain
	h, err := rules.Parse(c.Handle)
	if err != nil {
		return Handle{}, kez.PublicKey{}, err
	}
	if h.String() != c.Handle {
		return Handle{}, kez.PublicKey{}, fmt.Errorf("%w: the handle must be in canonical form %q, got %q", ErrBadClaim, h.String(), c.Handle)
	}
	if h.Domain != domain {
		return Handle{}, kez.PublicKey{}, fmt.Errorf("%w: this server registers handles at %s, not at %s", ErrBadClaim, domain, h.Domain)
	}
	key, err := kez.ParsePublicKey(c.Key)
	if err != nil {
		return Handle{}, kez.PublicKey{}, fmt.Errorf("%w: %w", ErrBadClaim, err)
	}
	t := time.Unix(c.Timestamp, 0)
	switch {
	case c.Timestamp <= 0:
		return Handle{}, kez.PublicKey{}, fmt.Errorf("%w: the timestamp is missing", ErrBadClaim)
	case now.Sub(t) > MaxClaimAge:
		return Handle{}, kez.PublicKey{}, fmt.Errorf("%w: the claim was signed %s ago, more than %s; sign a fresh one (check your clock)", ErrClaimTime, now.Sub(t).Round(time.Second), MaxClaimAge)
	case t.Sub(now) > MaxClaimSkew:
		return Handle{}, kez.PublicKey{}, fmt.Errorf("%w: the claim is dated %s in the future, more than %s; check your clock", ErrClaimTime, t.Sub(now).Round(time.Second), MaxClaimSkew)
	}
	sig, err := base64.RawURLEncoding.DecodeString(c.Signature)
	if err != nil {
		return Handle{}, kez.PublicKey{}, fmt.Errorf("%w: the signature is not unpadded base64url", ErrBadClaim)
	}
	if err := key.Verify(kez.ContextHandleClaim, ClaimStatement(h, domain, key, c.Timestamp), sig); err != nil {
		if errors.Is(err, kez.ErrBadSignature) {
			return Handle{}, kez.PublicKey{}, fmt.Errorf("%w: it was not made by %s for %s at %s", ErrBadSignature, key, h, domain)
		}
		return Handle{}, kez.PublicKey{}, err
	}
	return h, key, nil
}
