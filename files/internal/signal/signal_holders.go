package signal

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/files/format"
	"github.com/kez-lat/kez-chat/files/internal/addrs"
	"github.com/kez-lat/kez-chat/kez"
	ma "github.com/multiformats/go-multiaddr"
)

// Holders (docs/spec/signalling.md §6): a person who fetched a public file
// and re-serves it tells the owner's serving device so with a signed
// [Have] (kind 3); a fetcher asks the owner's device for the holders of a
// CID with a [HoldersRequest] (kind 4), and the device answers with a
// [HoldersAnswer] (kind 5): the haves it kept, signed again by itself.

// Signature contexts of the holders messages (docs/spec/identity.md §5).
const (
	// ContextHolder signs a have: a holder says it serves a blob.
	ContextHolder = "kez/v1 p2p holder"
	// ContextHolders signs an owner's answer listing the holders of a blob.
	ContextHolders = "kez/v1 p2p holders"
)

// Limits of the holders messages.
const (
	// MaxHaveAddrs bounds the addresses of one have.
	MaxHaveAddrs = MaxLocateAddrs
	// MaxHaveSize bounds a have on the wire.
	MaxHaveSize = locateHeadLen + 1 + maxCIDLen + 1 + MaxHaveAddrs*(1+maxHaveAddrLen) + signatureLen
	// MaxHolders bounds the records of one holders answer.
	MaxHolders = 8
	// HoldersRequestSize bounds a holders request on the wire.
	HoldersRequestSize = locateHeadLen + 1 + maxCIDLen
	// MaxHoldersAnswerSize bounds a holders answer on the wire.
	MaxHoldersAnswerSize = locateHeadLen + 1 + MaxHolders*(2+MaxHaveSize) + signatureLen
)

const (
	kindHave           = 3
	kindHoldersRequest = 4
	kindHoldersAnswer  = 5
	// maxCIDLen bounds the binary form of a CID; a KEZ blob CID is 39 bytes.
	maxCIDLen = 64
	// maxHaveAddrLen bounds the binary form of one address of a have.
	maxHaveAddrLen = addrs.MaxLen
)

// Have is a holder's signed statement that its node serves a blob: sent
// to the owner's serving device (Owner) after the holder fetched the
// blob from it, and again while it serves. Use it only after
// [Have.Verify].
type Have struct {
	Owner  kez.PublicKey // the owner's serving device
	Holder kez.PublicKey // the holder's device key (its node's PeerID)
	Nonce  [locateNonceLen]byte
	Time   time.Time // the holder's clock, milliseconds
	CID    cid.Cid
	Addrs  []ma.Multiaddr // the holder's node's addresses (addrs.Check: circuit ones too)

	Signature []byte
	raw       []byte // the whole message as parsed or signed
}

// Bytes returns the have's wire form (as parsed or signed).
func (h *Have) Bytes() []byte { return h.raw }

// HoldersRequest asks an owner's serving device for the holders of a
// blob. Like a [LocateRequest] it is not signed: the answer goes only to
// the requester's own inbox.
type HoldersRequest struct {
	Owner     kez.PublicKey
	Requester kez.PublicKey
	Nonce     [locateNonceLen]byte
	Time      time.Time
	CID       cid.Cid
	// Cookie is nil, or the [CookieLen] bytes of the owner's cookie reply
	// to the same request (docs/spec/signalling.md §7).
	Cookie []byte
}

// HoldersAnswer is an owner's signed answer to a [HoldersRequest]: the
// haves it kept for the blob. Use it only after [HoldersAnswer.Verify],
// and each record only after [CheckHolder].
type HoldersAnswer struct {
	Owner     kez.PublicKey
	Requester kez.PublicKey
	Nonce     [locateNonceLen]byte
	Time      time.Time
	Records   []*Have // parsed, not verified
	Signature []byte

	signed []byte
}

func appendCID(b []byte, c cid.Cid) ([]byte, error) {
	if err := format.CheckCID(c); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSignal, err)
	}
	cb := c.Bytes()
	b = append(b, byte(len(cb)))
	return append(b, cb...), nil
}

// parseCID reads a 1-byte length and a KEZ blob CID in canonical binary
// form from the start of b, and returns it with the rest of b.
func parseCID(b []byte) (cid.Cid, []byte, error) {
	if len(b) < 1 || int(b[0]) == 0 || int(b[0]) > maxCIDLen || len(b) < 1+int(b[0]) {
		return cid.Undef, nil, fmt.Errorf("%w: a bad CID length", ErrSignal)
	}
	c, err := format.CastCID(b[1 : 1+int(b[0])])
	if err != nil {
		return cid.Undef, nil, fmt.Errorf("%w: %w", ErrSignal, err)
	}
	return c, b[1+int(b[0]):], nil
}

// SignHave returns the wire form of h signed by signer, whose key must be
// h.Holder: h.Owner, Nonce, Time, CID and 1 to [MaxHaveAddrs] addresses
// are taken from h; h.Signature and h.Bytes are set.
func SignHave(signer kez.Signer, h *Have) ([]byte, error) {
	if signer.PublicKey() != h.Holder {
		return nil, fmt.Errorf("files: the have is %s's, not this key %s's", h.Holder, signer.PublicKey())
	}
	if len(h.Addrs) == 0 || len(h.Addrs) > MaxHaveAddrs {
		return nil, fmt.Errorf("files: a have carries 1 to %d addresses, got %d", MaxHaveAddrs, len(h.Addrs))
	}
	if err := checkSignalTime(h.Time); err != nil {
		return nil, err
	}
	b := appendHead(make([]byte, 0, MaxHaveSize), kindHave, h.Owner, h.Holder, h.Nonce, h.Time)
	b, err := appendCID(b, h.CID)
	if err != nil {
		return nil, err
	}
	b, err = appendAddrs(b, h.Addrs)
	if err != nil {
		return nil, err
	}
	sig, err := signer.Sign(ContextHolder, b)
	if err != nil {
		return nil, fmt.Errorf("files: signing the have: %w", err)
	}
	b = append(b, sig...)
	h.Signature, h.raw = sig, b
	return b, nil
}

// ParseHave decodes a have from untrusted bytes (at most [MaxHaveSize]),
// without verifying it: call [Have.Verify]. Errors wrap [ErrSignal].
func ParseHave(b []byte) (*Have, error) {
	if len(b) > MaxHaveSize {
		return nil, fmt.Errorf("%w: %d bytes is more than the %d a have may have", ErrSignal, len(b), MaxHaveSize)
	}
	var h Have
	var err error
	h.Owner, h.Holder, h.Nonce, h.Time, err = parseHead(b, kindHave)
	if err != nil {
		return nil, err
	}
	rest := b[locateHeadLen:]
	if h.CID, rest, err = parseCID(rest); err != nil {
		return nil, err
	}
	if len(rest) < 1+signatureLen {
		return nil, fmt.Errorf("%w: the have ends early", ErrSignal)
	}
	n := int(rest[0])
	if n == 0 || n > MaxHaveAddrs {
		return nil, fmt.Errorf("%w: %d addresses (1 to %d allowed)", ErrSignal, n, MaxHaveAddrs)
	}
	if h.Addrs, rest, err = parseAddrs(rest[1:], n); err != nil {
		return nil, err
	}
	if len(rest) != signatureLen {
		return nil, fmt.Errorf("%w: %d bytes after the addresses where a %d-byte signature was due", ErrSignal, len(rest), signatureLen)
	}
	h.Signature = append([]byte(nil), rest...)
	h.raw = append([]byte(nil), b...)
	return &h, nil
}

// Verify checks the have's signature under its holder's key and that its
// time is at most maxAge old and at most [MaxSignalSkew] ahead of now.
// Errors wrap [ErrSignal] (a bad signature also wraps
// [kez.ErrBadSignature]).
func (h *Have) Verify(now time.Time, maxAge time.Duration) error {
	if h.raw == nil {
		return fmt.Errorf("%w: the have was not parsed from bytes", ErrSignal)
	}
	if d := h.Time.Sub(now); d > MaxSignalSkew || d < -maxAge {
		return fmt.Errorf("%w: the have's time %s is %s away from this clock", ErrSignal, h.Time.Format(time.RFC3339), d.Round(time.Second))
	}
	if err := h.Holder.Verify(ContextHolder, h.raw[:len(h.raw)-signatureLen], h.Signature); err != nil {
		return fmt.Errorf("%w: %w", ErrSignal, err)
	}
	return nil
}

// CheckHolder is a fetcher's check of one record of a verified
// [HoldersAnswer] from owner (the serving device) for blob c: it is a have
// for c made for owner, by a holder that is neither owner nor the fetcher
// me, at most maxAge old, and its signature verifies. Errors wrap
// [ErrSignal].
func CheckHolder(h *Have, owner, me kez.PublicKey, c cid.Cid, now time.Time, maxAge time.Duration) error {
	switch {
	case h.Owner != owner:
		return fmt.Errorf("%w: the have was made for %s, not %s", ErrSignal, h.Owner, owner)
	case h.Holder == owner:
		return fmt.Errorf("%w: the holder is the owner's device itself", ErrSignal)
	case h.Holder == me:
		return fmt.Errorf("%w: the holder is this device", ErrSignal)
	case !h.CID.Equals(c):
		return fmt.Errorf("%w: the have is for %s, not %s", ErrSignal, h.CID, c)
	}
	return h.Verify(now, maxAge)
}

// Marshal returns the request's wire form.
func (r *HoldersRequest) Marshal() ([]byte, error) {
	if err := checkSignalTime(r.Time); err != nil {
		return nil, err
	}
	if err := checkCookieLen(r.Cookie); err != nil {
		return nil, err
	}
	b := appendHead(make([]byte, 0, HoldersRequestSize+CookieLen), kindHoldersRequest, r.Owner, r.Requester, r.Nonce, r.Time)
	b, err := appendCID(b, r.CID)
	if err != nil {
		return nil, err
	}
	return append(b, r.Cookie...), nil
}

// ParseHoldersRequest decodes a holders request from untrusted bytes,
// with or without a cookie (§7). Errors wrap [ErrSignal].
func ParseHoldersRequest(b []byte) (*HoldersRequest, error) {
	if len(b) > HoldersRequestSize+CookieLen {
		return nil, fmt.Errorf("%w: %d bytes is more than the %d a holders request may have", ErrSignal, len(b), HoldersRequestSize+CookieLen)
	}
	var r HoldersRequest
	var err error
	r.Owner, r.Requester, r.Nonce, r.Time, err = parseHead(b, kindHoldersRequest)
	if err != nil {
		return nil, err
	}
	rest := b[locateHeadLen:]
	if r.CID, rest, err = parseCID(rest); err != nil {
		return nil, err
	}
	switch len(rest) {
	case 0:
	case CookieLen:
		r.Cookie = bytes.Clone(rest)
	default:
		return nil, fmt.Errorf("%w: %d bytes after the CID", ErrSignal, len(rest))
	}
	return &r, nil
}

// SignHoldersAnswer returns the wire form of the answer to req: at most
// [MaxHolders] haves (their wire forms, as kept) signed by signer, whose
// key must be req.Owner, at time now. It does not check the haves: the
// owner keeps only those it verified.
func SignHoldersAnswer(signer kez.Signer, req *HoldersRequest, haves [][]byte, now time.Time) ([]byte, error) {
	if signer.PublicKey() != req.Owner {
		return nil, fmt.Errorf("files: the request asks for %s, not this key %s", req.Owner, signer.PublicKey())
	}
	if len(haves) > MaxHolders {
		return nil, fmt.Errorf("files: a holders answer carries at most %d records, got %d", MaxHolders, len(haves))
	}
	if err := checkSignalTime(now); err != nil {
		return nil, err
	}
	b := appendHead(nil, kindHoldersAnswer, req.Owner, req.Requester, req.Nonce, now)
	b = append(b, byte(len(haves)))
	for _, h := range haves {
		if len(h) > MaxHaveSize {
			return nil, fmt.Errorf("%w: a have of %d bytes", ErrSignal, len(h))
		}
		b = binary.BigEndian.AppendUint16(b, uint16(len(h)))
		b = append(b, h...)
	}
	sig, err := signer.Sign(ContextHolders, b)
	if err != nil {
		return nil, fmt.Errorf("files: signing the holders: %w", err)
	}
	return append(b, sig...), nil
}

// ParseHoldersAnswer decodes a holders answer from untrusted bytes (at
// most [MaxHoldersAnswerSize]), each record with [ParseHave], without
// verifying anything: call [HoldersAnswer.Verify], then [CheckHolder] on
// each record. Errors wrap [ErrSignal].
func ParseHoldersAnswer(b []byte) (*HoldersAnswer, error) {
	if len(b) > MaxHoldersAnswerSize {
		return nil, fmt.Errorf("%w: %d bytes is more than the %d allowed", ErrSignal, len(b), MaxHoldersAnswerSize)
	}
	var a HoldersAnswer
	var err error
	a.Owner, a.Requester, a.Nonce, a.Time, err = parseHead(b, kindHoldersAnswer)
	if err != nil {
		return nil, err
	}
	rest := b[locateHeadLen:]
	if len(rest) < 1+signatureLen {
		return nil, fmt.Errorf("%w: the answer ends early", ErrSignal)
	}
	n := int(rest[0])
	if n > MaxHolders {
		return nil, fmt.Errorf("%w: %d records (at most %d allowed)", ErrSignal, n, MaxHolders)
	}
	rest = rest[1:]
	for i := 0; i < n; i++ {
		if len(rest) < 2 {
			return nil, fmt.Errorf("%w: record %d runs past the end", ErrSignal, i)
		}
		l := int(binary.BigEndian.Uint16(rest))
		if len(rest) < 2+l+signatureLen {
			return nil, fmt.Errorf("%w: record %d runs past the end", ErrSignal, i)
		}
		h, err := ParseHave(rest[2 : 2+l])
		if err != nil {
			return nil, fmt.Errorf("record %d: %w", i, err)
		}
		a.Records = append(a.Records, h)
		rest = rest[2+l:]
	}
	if len(rest) != signatureLen {
		return nil, fmt.Errorf("%w: %d bytes after the records where a %d-byte signature was due", ErrSignal, len(rest), signatureLen)
	}
	a.Signature = append([]byte(nil), rest...)
	a.signed = append([]byte(nil), b[:len(b)-signatureLen]...)
	return &a, nil
}

// Verify checks that the answer is the owner's answer to this requester's
// holders request with this nonce, as [LocateAnswer.Verify] does, under
// [ContextHolders]. It does not check the records. Errors wrap
// [ErrSignal].
func (a *HoldersAnswer) Verify(owner, requester kez.PublicKey, nonce [locateNonceLen]byte, now time.Time) error {
	return signedAnswer{a.Owner, a.Requester, a.Nonce, a.Time, a.signed, a.Signature}.verify(ContextHolders, owner, requester, nonce, now)
}
