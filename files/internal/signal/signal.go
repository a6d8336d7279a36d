package signal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/kez-lat/kez-chat/files/internal/addrs"
	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/kez"
	ma "github.com/multiformats/go-multiaddr"
)

// Signalling is how a fetcher learns where an owner's node listens: it
// publishes a [LocateRequest] on the owner's subject
// ([SignalSubjectPrefix] + owner key) with a one-off reply subject under its
// own inbox, and the owner's client answers with a [LocateAnswer]: its
// libp2p addresses, signed under [kez.ContextPeerAddrs] together with both
// keys, the request's nonce and a time, so an answer cannot be replayed to
// another request or redirected to another requester. The fetcher then
// dials the PeerID derived from the owner's key, and the libp2p handshake
// proves it reached the owner. docs/spec/signalling.md specifies the
// messages, with test vectors.

// Signalling limits and constants (docs/spec/signalling.md).
const (
	// SignalSubjectPrefix + the owner's key ("U…") is the subject an
	// owner's client listens on for locate requests.
	SignalSubjectPrefix = wire.P2PSubjectPrefix

	// LocateRequestSize is the exact size of a request without a cookie;
	// one that carries a cookie (§7) is [CookieLen] bytes longer.
	LocateRequestSize = locateHeadLen
	// MaxLocateAddrs bounds the addresses of one answer.
	MaxLocateAddrs = addrs.MaxAddrs
	// MaxLocateAddrLen bounds the binary form of one address.
	MaxLocateAddrLen = addrs.MaxLen
	// MaxLocateAnswerSize bounds an answer on the wire.
	MaxLocateAnswerSize = locateHeadLen + 1 + MaxLocateAddrs*(1+MaxLocateAddrLen) + signatureLen

	// MaxSignalSkew is how far a message's time may be from the reader's
	// clock, either way.
	MaxSignalSkew = 5 * time.Minute
)

const (
	signalMagic     = "kezp"
	signalVersion   = 1
	kindLocate      = 1
	kindAnswer      = 2
	locateNonceLen  = 16
	locateHeadLen   = len(signalMagic) + 1 + 1 + 32 + 32 + locateNonceLen + 8
	signatureLen    = 64
	maxSignalTimeMs = 1<<53 - 1
)

// ErrSignal reports bytes that are not a well-formed signalling message,
// or an answer that does not belong to the request (another owner,
// requester or nonce, a stale time, a bad signature).
var ErrSignal = errors.New("files: invalid signalling message")

// LocateRequest asks an owner's client where its node listens. It is not
// signed: the owner answers only to a reply subject under the requester's
// own inbox (_INBOX.<requester>.), which only the requester may read.
type LocateRequest struct {
	Owner     kez.PublicKey
	Requester kez.PublicKey
	Nonce     [locateNonceLen]byte // fresh random bytes per request
	Time      time.Time            // the requester's clock, milliseconds
	// Cookie is nil, or the [CookieLen] bytes of the owner's cookie reply
	// to the same request (docs/spec/signalling.md §7).
	Cookie []byte
}

// LocateAnswer is an owner's signed answer to a [LocateRequest]: the
// libp2p addresses of its node. Use it only after [LocateAnswer.Verify].
type LocateAnswer struct {
	Owner     kez.PublicKey
	Requester kez.PublicKey
	Nonce     [locateNonceLen]byte // the request's nonce
	Time      time.Time            // the owner's clock, milliseconds
	Addrs     []ma.Multiaddr       // transport addresses (without /p2p) and circuit addresses
	Signature []byte

	signed []byte // the bytes the signature covers
}

func appendHead(b []byte, kind byte, owner, requester kez.PublicKey, nonce [locateNonceLen]byte, t time.Time) []byte {
	b = append(b, signalMagic...)
	b = append(b, signalVersion, kind)
	b = append(b, owner[:]...)
	b = append(b, requester[:]...)
	b = append(b, nonce[:]...)
	return binary.BigEndian.AppendUint64(b, uint64(t.UnixMilli()))
}

func checkSignalTime(t time.Time) error {
	if ms := t.UnixMilli(); ms < 0 || ms > maxSignalTimeMs {
		return fmt.Errorf("%w: time %v is out of range", ErrSignal, t)
	}
	return nil
}

// Marshal returns the request's wire form, [LocateRequestSize] bytes.
func (r *LocateRequest) Marshal() ([]byte, error) {
	if err := checkSignalTime(r.Time); err != nil {
		return nil, err
	}
	if err := checkCookieLen(r.Cookie); err != nil {
		return nil, err
	}
	b := appendHead(make([]byte, 0, locateHeadLen+CookieLen), kindLocate, r.Owner, r.Requester, r.Nonce, r.Time)
	return append(b, r.Cookie...), nil
}

// parseHead decodes the common head of both messages.
func parseHead(b []byte, kind byte) (owner, requester kez.PublicKey, nonce [locateNonceLen]byte, t time.Time, err error) {
	if len(b) < locateHeadLen {
		err = fmt.Errorf("%w: %d bytes is too short", ErrSignal, len(b))
		return
	}
	if string(b[:4]) != signalMagic {
		err = fmt.Errorf("%w: not a KEZ signalling message", ErrSignal)
		return
	}
	if b[4] != signalVersion {
		err = fmt.Errorf("%w: unknown version %d", ErrSignal, b[4])
		return
	}
	if b[5] != kind {
		err = fmt.Errorf("%w: message kind %d where %d was expected", ErrSignal, b[5], kind)
		return
	}
	b = b[6:]
	copy(owner[:], b[:32])
	copy(requester[:], b[32:64])
	copy(nonce[:], b[64:80])
	ms := binary.BigEndian.Uint64(b[80:88])
	if ms > maxSignalTimeMs {
		err = fmt.Errorf("%w: time %d is out of range", ErrSignal, ms)
		return
	}
	t = time.UnixMilli(int64(ms)).UTC()
	return
}

// ParseLocateRequest decodes a request from untrusted bytes: exactly
// [LocateRequestSize] bytes of the form in docs/spec/signalling.md, or
// [CookieLen] more with a cookie (§7). Errors wrap [ErrSignal].
func ParseLocateRequest(b []byte) (*LocateRequest, error) {
	if len(b) != locateHeadLen && len(b) != locateHeadLen+CookieLen {
		return nil, fmt.Errorf("%w: a request is %d or %d bytes, got %d", ErrSignal, locateHeadLen, locateHeadLen+CookieLen, len(b))
	}
	var r LocateRequest
	var err error
	r.Owner, r.Requester, r.Nonce, r.Time, err = parseHead(b, kindLocate)
	if err != nil {
		return nil, err
	}
	if len(b) > locateHeadLen {
		r.Cookie = bytes.Clone(b[locateHeadLen:])
	}
	return &r, nil
}

// SignLocateAnswer returns the wire form of the answer to req: list
// (at least one, at most [MaxLocateAddrs], each one [addrs.Check] accepts:
// a transport address without /p2p, or a circuit address through a relay)
// signed by signer, whose key must be req.Owner, at time now.
func SignLocateAnswer(signer kez.Signer, req *LocateRequest, list []ma.Multiaddr, now time.Time) ([]byte, error) {
	if signer.PublicKey() != req.Owner {
		return nil, fmt.Errorf("files: the request asks for %s, not this key %s", req.Owner, signer.PublicKey())
	}
	if len(list) == 0 || len(list) > MaxLocateAddrs {
		return nil, fmt.Errorf("files: an answer carries 1 to %d addresses, got %d", MaxLocateAddrs, len(list))
	}
	if err := checkSignalTime(now); err != nil {
		return nil, err
	}
	b := make([]byte, 0, MaxLocateAnswerSize)
	b = appendHead(b, kindAnswer, req.Owner, req.Requester, req.Nonce, now)
	b, err := appendAddrs(b, list)
	if err != nil {
		return nil, err
	}
	sig, err := signer.Sign(kez.ContextPeerAddrs, b)
	if err != nil {
		return nil, fmt.Errorf("files: signing the addresses: %w", err)
	}
	return append(b, sig...), nil
}

// checkAnswerAddr checks the binary form of one address with
// [addrs.Check]: a canonical multiaddr of at most MaxLocateAddrLen bytes
// with no /p2p component but a circuit address's relay (the peer is the
// owner's key, never something the answer says).
func checkAnswerAddr(b []byte) (ma.Multiaddr, error) {
	a, err := addrs.Check(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSignal, err)
	}
	return a, nil
}

// appendAddrs appends list to b as a count byte and, for each address, a
// length byte and its binary form, refusing any that [checkAnswerAddr]
// refuses. Callers bound len(list).
func appendAddrs(b []byte, list []ma.Multiaddr) ([]byte, error) {
	b = append(b, byte(len(list)))
	for _, a := range list {
		if _, err := checkAnswerAddr(a.Bytes()); err != nil {
			return nil, err
		}
		b = append(b, byte(len(a.Bytes())))
		b = append(b, a.Bytes()...)
	}
	return b, nil
}

// parseAddrs reads n length-prefixed addresses (as [appendAddrs] wrote
// them, after the count byte) from rest, which must still hold a
// signature after them, and returns them with what follows.
func parseAddrs(rest []byte, n int) ([]ma.Multiaddr, []byte, error) {
	var list []ma.Multiaddr
	for i := 0; i < n; i++ {
		if len(rest) < 1 || len(rest) < 1+int(rest[0])+signatureLen {
			return nil, nil, fmt.Errorf("%w: address %d runs past the end", ErrSignal, i)
		}
		l := int(rest[0])
		a, err := checkAnswerAddr(rest[1 : 1+l])
		if err != nil {
			return nil, nil, err
		}
		list = append(list, a)
		rest = rest[1+l:]
	}
	return list, rest, nil
}

// ParseLocateAnswer decodes an answer from untrusted bytes (at most
// [MaxLocateAnswerSize]), without verifying it: call [LocateAnswer.Verify].
// Errors wrap [ErrSignal].
func ParseLocateAnswer(b []byte) (*LocateAnswer, error) {
	if len(b) > MaxLocateAnswerSize {
		return nil, fmt.Errorf("%w: %d bytes is more than the %d allowed", ErrSignal, len(b), MaxLocateAnswerSize)
	}
	var a LocateAnswer
	var err error
	a.Owner, a.Requester, a.Nonce, a.Time, err = parseHead(b, kindAnswer)
	if err != nil {
		return nil, err
	}
	rest := b[locateHeadLen:]
	if len(rest) < 1+signatureLen {
		return nil, fmt.Errorf("%w: the answer ends early", ErrSignal)
	}
	n := int(rest[0])
	if n == 0 || n > MaxLocateAddrs {
		return nil, fmt.Errorf("%w: %d addresses (1 to %d allowed)", ErrSignal, n, MaxLocateAddrs)
	}
	if a.Addrs, rest, err = parseAddrs(rest[1:], n); err != nil {
		return nil, err
	}
	if len(rest) != signatureLen {
		return nil, fmt.Errorf("%w: %d bytes after the addresses where a %d-byte signature was due", ErrSignal, len(rest), signatureLen)
	}
	a.Signature = append([]byte(nil), rest...)
	a.signed = append([]byte(nil), b[:len(b)-signatureLen]...)
	return &a, nil
}

// Verify checks that the answer is the owner's answer to this requester's
// request with this nonce: every field matches, the time is within
// [MaxSignalSkew] of now, and the signature verifies under owner (the key
// read from the owner's verified sigchain). Errors wrap [ErrSignal] (a bad
// signature also wraps [kez.ErrBadSignature]).
func (a *LocateAnswer) Verify(owner, requester kez.PublicKey, nonce [locateNonceLen]byte, now time.Time) error {
	return signedAnswer{a.Owner, a.Requester, a.Nonce, a.Time, a.signed, a.Signature}.verify(kez.ContextPeerAddrs, owner, requester, nonce, now)
}

// signedAnswer is what an answer's check looks at: its head, the bytes
// its signature covers and the signature.
type signedAnswer struct {
	owner, requester kez.PublicKey
	nonce            [locateNonceLen]byte
	time             time.Time
	signed, sig      []byte
}

// verify checks an answer against the request it should answer (owner,
// requester, nonce), the clock now and its signature under context.
func (a signedAnswer) verify(context string, owner, requester kez.PublicKey, nonce [locateNonceLen]byte, now time.Time) error {
	switch {
	case a.signed == nil:
		return fmt.Errorf("%w: the answer was not parsed from bytes", ErrSignal)
	case a.owner != owner:
		return fmt.Errorf("%w: the answer is about %s, not %s", ErrSignal, a.owner, owner)
	case a.requester != requester:
		return fmt.Errorf("%w: the answer is meant for %s, not %s", ErrSignal, a.requester, requester)
	case a.nonce != nonce:
		return fmt.Errorf("%w: the answer is to another request", ErrSignal)
	}
	if d := a.time.Sub(now); d > MaxSignalSkew || d < -MaxSignalSkew {
		return fmt.Errorf("%w: the answer's time %s is %s away from this clock", ErrSignal, a.time.Format(time.RFC3339), d.Round(time.Second))
	}
	if err := owner.Verify(context, a.signed, a.sig); err != nil {
		return fmt.Errorf("%w: %w", ErrSignal, err)
	}
	return nil
}
