package sigchain

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/kez-lat/kez-chat/kez"
)

// Limits and timing of device link requests (docs/spec/sigchain.md,
// "Devices").
const (
	// MaxLinkRequestSize bounds a whole signed link request in bytes.
	MaxLinkRequestSize = 1024
	// MaxDeviceNameLen bounds a device name in bytes.
	MaxDeviceNameLen = 64
	// LinkRequestTTL is the longest a link request is valid
	// (expires − created); [NewLinkRequest] uses exactly this.
	LinkRequestTTL = 10 * time.Minute
	// LinkRequestSkew is how far a link request's created time may be
	// ahead of a clock that checks it, and how long before created an
	// add_device link that carries it may be made.
	LinkRequestSkew = 5 * time.Minute
)

// Errors of link requests and link codes.
var (
	// ErrBadLinkRequest: bytes that are not a link request in its one
	// canonical form, a field that breaks its rule, or a signature that
	// does not verify with the request's device key.
	ErrBadLinkRequest = errors.New("sigchain: bad link request")
	// ErrLinkExpired: the link request's expiry time has passed.
	ErrLinkExpired = errors.New("sigchain: link request expired")
	// ErrLinkNotYetValid: the link request was made more than
	// [LinkRequestSkew] after the checking clock's time.
	ErrLinkNotYetValid = errors.New("sigchain: link request is dated in the future")
	// ErrBadLinkCode: text that is not a link code, or whose check
	// character does not match (a typo).
	ErrBadLinkCode = errors.New("sigchain: bad link code")
)

// LinkRequest is a new device's signed request to be added to a person's
// chain: its key, a name for people to recognise it, a random nonce and a
// validity window of at most [LinkRequestTTL]. It is signed by the device
// key under [kez.ContextDeviceLinkRequest], so an add_device link carrying
// it proves the device agreed. It is immutable and safe for concurrent use.
type LinkRequest struct {
	raw     []byte
	device  kez.PublicKey
	name    string
	nonce   [16]byte
	created int64
	expires int64
}

const (
	nonceTextLen = 22 // unpadded base64url of 16 bytes
	fReqSig      = `,"sig":"`
)

// NewLinkRequest makes and signs a link request for the device key dev,
// valid from now for [LinkRequestTTL], with a fresh random nonce. name is
// what the approving person sees (1 to [MaxDeviceNameLen] bytes of
// printable UTF-8, no leading or trailing space).
func NewLinkRequest(dev kez.Signer, name string, now time.Time) (*LinkRequest, error) {
	var nonce [16]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, fmt.Errorf("sigchain: link request nonce: %w", err)
	}
	return newLinkRequest(dev, name, now, nonce)
}

func newLinkRequest(dev kez.Signer, name string, now time.Time, nonce [16]byte) (*LinkRequest, error) {
	if err := CheckDeviceName(name); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadLinkRequest, err)
	}
	created := now.Unix()
	expires := created + int64(LinkRequestTTL/time.Second)
	if created < 0 || expires > maxSafeInt {
		return nil, fmt.Errorf("%w: time %v is out of range", ErrBadLinkRequest, now)
	}
	b := []byte(`{"created":`)
	b = strconv.AppendInt(b, created, 10)
	b = append(b, `,"device":`...)
	b = appendString(b, dev.PublicKey().String())
	b = append(b, `,"expires":`...)
	b = strconv.AppendInt(b, expires, 10)
	b = append(b, `,"name":`...)
	b = appendString(b, name)
	b = append(b, `,"nonce":"`...)
	b = b64.AppendEncode(b, nonce[:])
	b = append(b, '"')
	sig, err := dev.Sign(kez.ContextDeviceLinkRequest, append(bytes.Clone(b), '}'))
	if err != nil {
		return nil, fmt.Errorf("sigchain: signing link request: %w", err)
	}
	if len(sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("sigchain: signer returned a %d-byte signature", len(sig))
	}
	b = append(b, fReqSig...)
	b = b64.AppendEncode(b, sig)
	b = append(b, '"', '}')
	return ParseLinkRequest(b)
}

func badRequest(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrBadLinkRequest, fmt.Sprintf(format, a...))
}

// ParseLinkRequest decodes a link request from its exact canonical bytes
// and verifies its signature with the device key it names. Every other
// byte form, a field that breaks its rule and a bad signature are errors
// wrapping [ErrBadLinkRequest]. It does not look at the clock: call
// [LinkRequest.CheckFresh]. The returned request keeps its own copy of b.
func ParseLinkRequest(b []byte) (*LinkRequest, error) {
	if len(b) > MaxLinkRequestSize {
		return nil, badRequest("%d bytes, the limit is %d", len(b), MaxLinkRequestSize)
	}
	raw := bytes.Clone(b)
	if err := checkCanonicalObject(raw); err != nil {
		return nil, badRequest("%v", err)
	}
	v, err := bodyFields("link request", raw, "created", "device", "expires", "name", "nonce", "sig")
	if err != nil {
		return nil, badRequest("%v", err)
	}
	r := &LinkRequest{raw: raw}
	if r.created, err = unixValue("created", v[0]); err != nil {
		return nil, badRequest("%v", err)
	}
	if r.device, err = keyValue("device", v[1]); err != nil {
		return nil, badRequest("%v", err)
	}
	if r.expires, err = unixValue("expires", v[2]); err != nil {
		return nil, badRequest("%v", err)
	}
	if r.expires <= r.created || r.expires-r.created > int64(LinkRequestTTL/time.Second) {
		return nil, badRequest("expires must be after created by at most %d seconds", int64(LinkRequestTTL/time.Second))
	}
	if r.name, err = stringValue("name", v[3]); err == nil {
		err = CheckDeviceName(r.name)
	}
	if err != nil {
		return nil, badRequest("%v", err)
	}
	nonce, err := stringValue("nonce", v[4])
	if err != nil || len(nonce) != nonceTextLen {
		return nil, badRequest("nonce must be 16 bytes in unpadded base64url (%d characters)", nonceTextLen)
	}
	if n, err := b64.Decode(r.nonce[:], []byte(nonce)); err != nil || n != len(r.nonce) {
		return nil, badRequest("nonce must be 16 bytes in canonical unpadded base64url")
	}
	sigText, err := stringValue("sig", v[5])
	if err != nil || len(sigText) != sigTextLen {
		return nil, badRequest("sig must be %d characters of unpadded base64url", sigTextLen)
	}
	var sig [ed25519.SignatureSize]byte
	if n, err := b64.Decode(sig[:], []byte(sigText)); err != nil || n != len(sig) {
		return nil, badRequest("sig must be %d bytes in canonical unpadded base64url", len(sig))
	}
	// sig is the last field: the signed payload is everything before it.
	sigStart := len(raw) - len(fReqSig) - sigTextLen - 2
	if err := r.device.Verify(kez.ContextDeviceLinkRequest, r.signedPayload(sigStart), sig[:]); err != nil {
		return nil, fmt.Errorf("%w: the signature does not verify with device %s: %w", ErrBadLinkRequest, r.device, err)
	}
	return r, nil
}

func (r *LinkRequest) signedPayload(sigStart int) []byte {
	out := make([]byte, sigStart+1)
	copy(out, r.raw[:sigStart])
	out[sigStart] = '}'
	return out
}

// CheckDeviceName reports whether name is acceptable as a device name: 1
// to [MaxDeviceNameLen] bytes of valid UTF-8, every character printable
// (Unicode letters, marks, numbers, punctuation, symbols and the ASCII
// space; no control, format or other space characters) by the Unicode
// 15.0.0 tables the spec names, no leading or trailing space.
func CheckDeviceName(name string) error {
	if name == "" || len(name) > MaxDeviceNameLen {
		return fmt.Errorf("a device name is 1 to %d bytes", MaxDeviceNameLen)
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("a device name is valid UTF-8")
	}
	for _, r := range name {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("a device name has only printable characters, not %U", r)
		}
	}
	if name[0] == ' ' || name[len(name)-1] == ' ' {
		return fmt.Errorf("a device name does not start or end with a space")
	}
	return nil
}

func unixValue(name string, v []byte) (int64, error) {
	if len(v) == 0 || v[0] < '0' || v[0] > '9' {
		return 0, fmt.Errorf("%s must be a non-negative integer (Unix seconds)", name)
	}
	n, _, err := scanInt(v, 0)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	return n, nil
}

func keyValue(name string, v []byte) (kez.PublicKey, error) {
	s, err := stringValue(name, v)
	if err != nil {
		return kez.PublicKey{}, err
	}
	k, err := kez.ParsePublicKey(s)
	if err != nil {
		return kez.PublicKey{}, fmt.Errorf("%s: %w", name, err)
	}
	return k, nil
}

// Bytes returns the request's canonical signed bytes: what the device
// uploads, what an add_device body embeds and what [LinkRequest.Code]
// hashes. Do not modify the result.
func (r *LinkRequest) Bytes() []byte { return r.raw }

// Device returns the key of the device asking to be added.
func (r *LinkRequest) Device() kez.PublicKey { return r.device }

// Name returns the device's name.
func (r *LinkRequest) Name() string { return r.name }

// Nonce returns a copy of the request's 16 random bytes.
func (r *LinkRequest) Nonce() []byte { return bytes.Clone(r.nonce[:]) }

// Created returns when the request was made (seconds).
func (r *LinkRequest) Created() time.Time { return time.Unix(r.created, 0).UTC() }

// Expires returns when the request stops being valid (seconds).
func (r *LinkRequest) Expires() time.Time { return time.Unix(r.expires, 0).UTC() }

// CheckFresh reports whether the request is valid at now: an error
// wrapping [ErrLinkExpired] after its expiry, [ErrLinkNotYetValid] if it
// was made more than [LinkRequestSkew] after now, else nil.
func (r *LinkRequest) CheckFresh(now time.Time) error {
	t := now.Unix()
	if t > r.expires {
		return fmt.Errorf("%w at %s", ErrLinkExpired, r.Expires().Format(time.RFC3339))
	}
	if r.created > t+int64(LinkRequestSkew/time.Second) {
		return fmt.Errorf("%w: made at %s", ErrLinkNotYetValid, r.Created().Format(time.RFC3339))
	}
	return nil
}

// Code returns the request's link code, the short text the new device
// shows and the approving person types: it commits to the whole signed
// request, so to the device key.
func (r *LinkRequest) Code() LinkCode {
	h := sha256.New()
	h.Write([]byte(linkCodeDomain))
	h.Write(r.raw)
	var c LinkCode
	copy(c[:], h.Sum(nil))
	return c
}

// MarshalJSON returns [LinkRequest.Bytes], so a request can be embedded in
// JSON documents unchanged.
func (r *LinkRequest) MarshalJSON() ([]byte, error) { return r.raw, nil }

// UnmarshalJSON parses a request strictly, as [ParseLinkRequest].
func (r *LinkRequest) UnmarshalJSON(b []byte) error {
	p, err := ParseLinkRequest(b)
	if err != nil {
		return err
	}
	*r = *p
	return nil
}

// linkCodeDomain separates link code hashing from every other use.
const linkCodeDomain = "kez/v1 device link code\x00"

// LinkCode is the first 80 bits of SHA-256("kez/v1 device link code\x00" ||
// request bytes). Its text form ([LinkCode.String]) is 16 Crockford base32
// characters and a check character, in groups: "7KQ2-M9XD-4HTA-PW3R-K".
type LinkCode [10]byte

// crockford is the Crockford base32 alphabet: symbol values 0 to 31.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// linkCodeSymbols is the number of symbols in a link code's text,
// including the check character.
const linkCodeSymbols = 17

// symbols returns the 16 five-bit values of c, most significant first.
func (c LinkCode) symbols() [16]byte {
	var s [16]byte
	var acc uint64
	bits := 0
	j := 0
	for _, b := range c {
		acc = acc<<8 | uint64(b)
		bits += 8
		for bits >= 5 {
			s[j] = byte(acc>>(bits-5)) & 31
			bits -= 5
			j++
		}
	}
	return s
}

// gfMul multiplies in GF(32) = GF(2)[x]/(x^5 + x^2 + 1).
func gfMul(a, b byte) byte {
	var p byte
	for range 5 {
		if b&1 != 0 {
			p ^= a
		}
		b >>= 1
		a <<= 1
		if a&32 != 0 {
			a ^= 0x25
		}
	}
	return p
}

// checkSymbol is the XOR of gfMul(s[i], 2^(i+1)) over the 16 symbols: any
// one wrong symbol, and any two symbols swapped, change it (the weights
// 2^0 = 1 for the check symbol itself, 2^1 … 2^16 are distinct and non-zero).
func checkSymbol(s [16]byte) byte {
	var c byte
	w := byte(1)
	for _, v := range s {
		w = gfMul(w, 2)
		c ^= gfMul(v, w)
	}
	return c
}

// String returns the code's text: "XXXX-XXXX-XXXX-XXXX-C", upper-case
// Crockford base32 with the check character last.
func (c LinkCode) String() string {
	s := c.symbols()
	var b strings.Builder
	b.Grow(21)
	for i, v := range s {
		if i > 0 && i%4 == 0 {
			b.WriteByte('-')
		}
		b.WriteByte(crockford[v])
	}
	b.WriteByte('-')
	b.WriteByte(crockford[checkSymbol(s)])
	return b.String()
}

// LinkCodeURIPrefix starts the text a QR code of a link code holds:
// "KEZ-LINK:" and the code's text ([LinkCode.URI]). It is a URI of scheme
// kez-link, written in upper case so that all of it fits QR's
// alphanumeric mode (upper-case letters, digits, "-" and ":").
const LinkCodeURIPrefix = "KEZ-LINK:"

// URI returns what a QR code of c holds: [LinkCodeURIPrefix] and c's
// text, e.g. "KEZ-LINK:7KQ2-M9XD-4HTA-PW3R-K". [ParseLinkCode] reads it.
func (c LinkCode) URI() string { return LinkCodeURIPrefix + c.String() }

// MarshalText implements encoding.TextMarshaler with [LinkCode.String].
func (c LinkCode) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler with [ParseLinkCode].
func (c *LinkCode) UnmarshalText(b []byte) error {
	p, err := ParseLinkCode(string(b))
	if err != nil {
		return err
	}
	*c = p
	return nil
}

// IsZero reports whether c is the zero value.
func (c LinkCode) IsZero() bool { return c == LinkCode{} }

// crockfordValue returns the value of a Crockford base32 character, read
// the Crockford way: either case, O as 0, I and L as 1.
func crockfordValue(r byte) (byte, bool) {
	switch {
	case r >= 'a' && r <= 'z':
		r -= 'a' - 'A'
	}
	switch r {
	case 'O':
		return 0, true
	case 'I', 'L':
		return 1, true
	}
	i := strings.IndexByte(crockford, r)
	if i < 0 {
		return 0, false
	}
	return byte(i), true
}

// ParseLinkCode reads the text of a link code as people type it: either
// case, with or without dashes and spaces, O read as 0 and I, L as 1, and
// with or without [LinkCodeURIPrefix] (in either case) in front, as a QR
// code holds it. Text that is not 17 Crockford base32 characters, and a
// check character that does not match (a typo), are errors wrapping
// [ErrBadLinkCode].
func ParseLinkCode(s string) (LinkCode, error) {
	var c LinkCode
	if len(s) >= len(LinkCodeURIPrefix) && strings.EqualFold(s[:len(LinkCodeURIPrefix)], LinkCodeURIPrefix) {
		s = s[len(LinkCodeURIPrefix):]
	}
	var sym [linkCodeSymbols]byte
	n := 0
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if ch == '-' || ch == ' ' || ch == '\t' {
			continue
		}
		v, ok := crockfordValue(ch)
		if !ok {
			return c, fmt.Errorf("%w: %q is not a link code character", ErrBadLinkCode, rune(ch))
		}
		if n == linkCodeSymbols {
			return c, fmt.Errorf("%w: more than %d characters", ErrBadLinkCode, linkCodeSymbols)
		}
		sym[n] = v
		n++
	}
	if n != linkCodeSymbols {
		return c, fmt.Errorf("%w: %d characters, a link code has %d", ErrBadLinkCode, n, linkCodeSymbols)
	}
	var data [16]byte
	copy(data[:], sym[:16])
	if checkSymbol(data) != sym[16] {
		return c, fmt.Errorf("%w: the check character does not match (a typo?)", ErrBadLinkCode)
	}
	var acc uint64
	bits, j := 0, 0
	for _, v := range data {
		acc = acc<<5 | uint64(v)
		bits += 5
		if bits >= 8 {
			c[j] = byte(acc >> (bits - 8))
			bits -= 8
			j++
		}
	}
	return c, nil
}
