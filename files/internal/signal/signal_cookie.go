package signal

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"time"

	"github.com/kez-lat/kez-chat/kez"
)

// Cookies (docs/spec/signalling.md §7): anyone may publish requests to an
// owner's subject as fast as they like, with made-up requester keys, and
// each answer costs the owner an ed25519 signature. An owner over its
// answer budget therefore answers a request without a cookie with a small
// unsigned [CookieReply] to the request's reply subject (under the named
// requester's inbox, which only that requester reads); the requester sends
// the same request again with the cookie, and the owner answers it within
// a budget of that requester key's own. A made-up key never reads its
// cookies, and a real key cannot take more than its own budget.

// Cookie sizes and timings.
const (
	// CookieLen is the size of a cookie, appended to a request that
	// carries one.
	CookieLen = 16
	// CookieReplySize is the exact size of a cookie reply.
	CookieReplySize = locateHeadLen + 1 + CookieLen
	// CookieRotation is how often an owner draws a new cookie secret; a
	// cookie made with the current or the previous secret is accepted.
	CookieRotation = 2 * time.Minute

	kindCookie      = 6
	cookieSecretLen = 32
)

// CookieReply is an owner's unsigned answer to a request it is too busy to
// answer without a cookie: the requester sends the same request again with
// Cookie appended. Owner, Requester and Nonce are the request's.
type CookieReply struct {
	Owner     kez.PublicKey
	Requester kez.PublicKey
	Nonce     [locateNonceLen]byte
	Time      time.Time // the owner's clock, milliseconds
	Kind      byte      // the request's kind: 1 (locate) or 4 (holders)
	Cookie    [CookieLen]byte
}

func checkCookieLen(c []byte) error {
	if c != nil && len(c) != CookieLen {
		return fmt.Errorf("%w: a cookie is %d bytes, got %d", ErrSignal, CookieLen, len(c))
	}
	return nil
}

func cookieKind(k byte) bool { return k == kindLocate || k == kindHoldersRequest }

// Marshal returns the cookie reply's wire form, [CookieReplySize] bytes.
func (c *CookieReply) Marshal() ([]byte, error) {
	if err := checkSignalTime(c.Time); err != nil {
		return nil, err
	}
	if !cookieKind(c.Kind) {
		return nil, fmt.Errorf("%w: a cookie for message kind %d", ErrSignal, c.Kind)
	}
	b := appendHead(make([]byte, 0, CookieReplySize), kindCookie, c.Owner, c.Requester, c.Nonce, c.Time)
	b = append(b, c.Kind)
	return append(b, c.Cookie[:]...), nil
}

// ParseCookieReply decodes a cookie reply from untrusted bytes: exactly
// [CookieReplySize] bytes, for a request of kind 1 or 4. Errors wrap
// [ErrSignal]. A cookie reply is not signed; a requester uses it only for
// the request it names (owner, requester, nonce and kind).
func ParseCookieReply(b []byte) (*CookieReply, error) {
	if len(b) != CookieReplySize {
		return nil, fmt.Errorf("%w: a cookie reply is %d bytes, got %d", ErrSignal, CookieReplySize, len(b))
	}
	var c CookieReply
	var err error
	c.Owner, c.Requester, c.Nonce, c.Time, err = parseHead(b, kindCookie)
	if err != nil {
		return nil, err
	}
	c.Kind = b[locateHeadLen]
	if !cookieKind(c.Kind) {
		return nil, fmt.Errorf("%w: a cookie for message kind %d", ErrSignal, c.Kind)
	}
	copy(c.Cookie[:], b[locateHeadLen+1:])
	return &c, nil
}

// cookieEpoch is the coarse time a cookie is made for: the owner's Unix
// time in seconds divided by 120.
func cookieEpoch(t time.Time) int64 {
	return t.Unix() / int64(CookieRotation/time.Second)
}

// makeCookie is the first [CookieLen] bytes of HMAC-SHA256 under secret
// over requester (32 bytes) | nonce (16) | kind (1) | epoch (8, big-endian).
func makeCookie(secret []byte, requester kez.PublicKey, nonce [locateNonceLen]byte, kind byte, epoch int64) (c [CookieLen]byte) {
	m := hmac.New(sha256.New, secret)
	m.Write(requester[:])
	m.Write(nonce[:])
	m.Write([]byte{kind})
	m.Write(binary.BigEndian.AppendUint64(nil, uint64(epoch)))
	copy(c[:], m.Sum(nil))
	return c
}

// cookieJar holds an owner's cookie secrets: the one of the current epoch
// and the one of the epoch before, each drawn at random when its epoch
// begins and never stored. Not safe for concurrent use.
type cookieJar struct {
	rand      io.Reader
	epoch     int64
	cur, prev []byte // prev is nil unless drawn for epoch-1
}

// rotate moves the jar to the epoch of now (never back) and returns it.
func (j *cookieJar) rotate(now time.Time) (int64, error) {
	e := cookieEpoch(now)
	if j.cur != nil && e <= j.epoch {
		return j.epoch, nil
	}
	s := make([]byte, cookieSecretLen)
	if _, err := io.ReadFull(j.rand, s); err != nil {
		return 0, fmt.Errorf("files: reading randomness: %w", err)
	}
	if j.cur != nil && e == j.epoch+1 {
		j.prev = j.cur
	} else {
		j.prev = nil
	}
	j.cur, j.epoch = s, e
	return e, nil
}

// mint returns the cookie for a request at now.
func (j *cookieJar) mint(requester kez.PublicKey, nonce [locateNonceLen]byte, kind byte, now time.Time) ([CookieLen]byte, error) {
	e, err := j.rotate(now)
	if err != nil {
		return [CookieLen]byte{}, err
	}
	return makeCookie(j.cur, requester, nonce, kind, e), nil
}

// valid reports whether cookie was minted for this requester, nonce and
// kind in the current or the previous epoch.
func (j *cookieJar) valid(cookie []byte, requester kez.PublicKey, nonce [locateNonceLen]byte, kind byte, now time.Time) bool {
	e, err := j.rotate(now)
	if err != nil || len(cookie) != CookieLen {
		return false
	}
	want := makeCookie(j.cur, requester, nonce, kind, e)
	if hmac.Equal(cookie, want[:]) {
		return true
	}
	if j.prev == nil {
		return false
	}
	want = makeCookie(j.prev, requester, nonce, kind, e-1)
	return hmac.Equal(cookie, want[:])
}

func newCookieJar(r io.Reader) *cookieJar {
	if r == nil {
		r = rand.Reader
	}
	return &cookieJar{rand: r}
}
