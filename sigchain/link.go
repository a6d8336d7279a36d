package sigchain

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/multiformats/go-multihash"
)

// Version is the link format version this package writes and reads.
const Version = 1

// Size limits on untrusted input (docs/spec/sigchain.md, "Limits").
const (
	// MaxLinkSize bounds a whole signed link in bytes.
	MaxLinkSize = 64 << 10
	// MaxBodySize bounds the body of every link type except
	// set_shared_files and unknown types.
	MaxBodySize = 4 << 10
	// MaxSharedFilesBodySize bounds a set_shared_files body.
	MaxSharedFilesBodySize = 60 << 10
	// MaxTypeLen bounds a link type name.
	MaxTypeLen = 64
)

// ErrMalformed reports bytes that are not a link in its one canonical form:
// bad JSON, a field out of order, whitespace, a bad key, CID or signature
// encoding, an unknown version, or a size over a limit. A server answers it
// with 400 (413 for size).
var ErrMalformed = errors.New("sigchain: malformed link")

// ErrTooLarge reports a link or body over its size limit. It wraps
// [ErrMalformed] for links and [ErrInvalid] for bodies.
var ErrTooLarge = errors.New("over the size limit")

// Link is one signed, parsed sigchain link. It is immutable and safe for
// concurrent use. Make one with [ParseLink] (untrusted bytes) or [NewLink]
// (signing); a parsed link is well formed but not yet verified: only
// [Verify] and [State.Extend] check signatures and chain rules.
type Link struct {
	raw      []byte // the canonical signed bytes
	sigStart int    // index of `,"sig":` in raw
	bodyOff  int    // body is raw[bodyOff:bodyEnd]
	bodyEnd  int
	id       [32]byte // SHA-256 of raw: the link ID's digest

	version int
	seqno   uint64
	hasPrev bool
	prev    [32]byte // digest of the previous link's ID
	ctime   int64
	key     kez.PublicKey
	typ     string
	ignore  bool
	sig     [ed25519.SignatureSize]byte
}

// Field prefixes of the envelope, in their fixed order.
const (
	fV      = `{"v":`
	fSeqno  = `,"seqno":`
	fPrev   = `,"prev":`
	fCtime  = `,"ctime":`
	fKey    = `,"key":"`
	fType   = `,"type":"`
	fIgnore = `,"ignore_if_unsupported":`
	fBody   = `,"body":`
	fSig    = `,"sig":"`
)

var (
	b64 = base64.RawURLEncoding.Strict()
	// b32 is the multibase "b" alphabet: RFC 4648 base32, lower case, no
	// padding.
	b32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)
	// cidPrefix is CIDv1, codec raw (0x55), multihash sha2-256 (0x12), 32 bytes.
	cidPrefix = []byte{0x01, 0x55, 0x12, 0x20}
)

const (
	cidTextLen = 1 + (36*8+4)/5 // "b" + base32 of 36 bytes
	sigTextLen = (ed25519.SignatureSize*8 + 5) / 6
	keyTextLen = 56
)

func malformed(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, a...))
}

// ParseLink decodes one link from its exact canonical bytes. Any other byte
// form of the same content (whitespace, another field order or escape, a
// non-canonical CID or base64) is rejected with an error wrapping
// [ErrMalformed], so every link has exactly one encoding and one ID.
// The returned link keeps its own copy of b.
func ParseLink(b []byte) (*Link, error) {
	if len(b) > MaxLinkSize {
		return nil, fmt.Errorf("%w: %w: link is %d bytes, the limit is %d", ErrMalformed, ErrTooLarge, len(b), MaxLinkSize)
	}
	raw := bytes.Clone(b)
	l := &Link{raw: raw}
	p := parser{b: raw}

	if !p.lit(fV) {
		return nil, p.fail("a link starts with {\"v\":")
	}
	v, err := p.uint()
	if err != nil {
		return nil, err
	}
	if v != Version {
		return nil, malformed("link version %d is not supported (this reader knows version %d)", v, Version)
	}
	l.version = int(v)

	if !p.lit(fSeqno) {
		return nil, p.fail("want \"seqno\" after \"v\"")
	}
	if l.seqno, err = p.uint(); err != nil {
		return nil, err
	}
	if l.seqno == 0 {
		return nil, malformed("seqno starts at 1")
	}

	if !p.lit(fPrev) {
		return nil, p.fail("want \"prev\" after \"seqno\"")
	}
	if p.lit("null") {
		l.hasPrev = false
	} else {
		if !p.lit(`"`) {
			return nil, p.fail("prev is a CID string or null")
		}
		if l.prev, err = p.cid(); err != nil {
			return nil, err
		}
		l.hasPrev = true
	}

	if !p.lit(fCtime) {
		return nil, p.fail("want \"ctime\" after \"prev\"")
	}
	ct, err := p.uint()
	if err != nil {
		return nil, err
	}
	l.ctime = int64(ct)

	if !p.lit(fKey) {
		return nil, p.fail("want \"key\" after \"ctime\"")
	}
	if p.i+keyTextLen+1 > len(raw) || raw[p.i+keyTextLen] != '"' {
		return nil, p.fail("key is a 56-character nkey (U…)")
	}
	if l.key, err = kez.ParsePublicKey(string(raw[p.i : p.i+keyTextLen])); err != nil {
		return nil, malformed("key: %v", err)
	}
	p.i += keyTextLen + 1

	if !p.lit(fType) {
		return nil, p.fail("want \"type\" after \"key\"")
	}
	start := p.i
	for p.i < len(raw) && isTypeByte(raw[p.i]) {
		p.i++
	}
	if p.i == start || p.i-start > MaxTypeLen || !p.lit(`"`) {
		return nil, p.fail("type is 1 to %d characters of a-z, 0-9 and _", MaxTypeLen)
	}
	l.typ = string(raw[start : p.i-1])

	if !p.lit(fIgnore) {
		return nil, p.fail("want \"ignore_if_unsupported\" after \"type\"")
	}
	switch {
	case p.lit("true"):
		l.ignore = true
	case p.lit("false"):
	default:
		return nil, p.fail("ignore_if_unsupported is true or false")
	}

	if !p.lit(fBody) {
		return nil, p.fail("want \"body\" after \"ignore_if_unsupported\"")
	}
	if p.i >= len(raw) || raw[p.i] != '{' {
		return nil, p.fail("body is a JSON object")
	}
	l.bodyOff = p.i
	if p.i, err = scanObject(raw, p.i, 1); err != nil {
		return nil, malformed("body: %v", err)
	}
	l.bodyEnd = p.i

	l.sigStart = p.i
	if !p.lit(fSig) {
		return nil, p.fail("want \"sig\" after \"body\"")
	}
	if p.i+sigTextLen+2 != len(raw) || raw[p.i+sigTextLen] != '"' || raw[p.i+sigTextLen+1] != '}' {
		return nil, p.fail("sig is %d characters of unpadded base64url and ends the link", sigTextLen)
	}
	n, err := b64.Decode(l.sig[:], raw[p.i:p.i+sigTextLen])
	if err != nil || n != ed25519.SignatureSize {
		return nil, malformed("sig is not canonical unpadded base64url of %d bytes", ed25519.SignatureSize)
	}
	l.id = sha256.Sum256(raw)
	return l, nil
}

func isTypeByte(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' }

// parser walks the fixed-order envelope.
type parser struct {
	b []byte
	i int
}

func (p *parser) lit(s string) bool {
	if len(p.b)-p.i >= len(s) && string(p.b[p.i:p.i+len(s)]) == s {
		p.i += len(s)
		return true
	}
	return false
}

func (p *parser) fail(format string, a ...any) error {
	return malformed("at byte %d: %s", p.i, fmt.Sprintf(format, a...))
}

func (p *parser) uint() (uint64, error) {
	if p.i >= len(p.b) || p.b[p.i] == '-' {
		return 0, p.fail("want a non-negative integer")
	}
	v, end, err := scanInt(p.b, p.i)
	if err != nil {
		return 0, malformed("%v", err)
	}
	p.i = end
	return uint64(v), nil
}

// cid parses a quoted link ID whose opening quote has been consumed.
func (p *parser) cid() ([32]byte, error) {
	var d [32]byte
	if p.i+cidTextLen+1 > len(p.b) || p.b[p.i+cidTextLen] != '"' {
		return d, p.fail("prev is a %d-character CIDv1 (base32, raw, sha2-256)", cidTextLen)
	}
	dig, err := parseIDText(p.b[p.i : p.i+cidTextLen])
	if err != nil {
		return d, malformed("prev: %v", err)
	}
	p.i += cidTextLen + 1
	return dig, nil
}

// parseIDText parses the canonical text form of a link ID and returns its
// SHA-256 digest.
func parseIDText(t []byte) ([32]byte, error) {
	var d [32]byte
	if len(t) != cidTextLen || t[0] != 'b' {
		return d, fmt.Errorf("a link ID is a %d-character CIDv1 in base32 (starting with \"b\")", cidTextLen)
	}
	var buf [36]byte
	n, err := b32.Decode(buf[:], t[1:])
	if err != nil || n != 36 {
		return d, fmt.Errorf("a link ID is lower-case base32")
	}
	if !bytes.Equal(buf[:4], cidPrefix) {
		return d, fmt.Errorf("a link ID is a CIDv1 with codec raw and a sha2-256 multihash")
	}
	// Re-encode to reject non-zero trailing bits (two texts, one ID).
	var enc [cidTextLen - 1]byte
	b32.Encode(enc[:], buf[:])
	if !bytes.Equal(enc[:], t[1:]) {
		return d, fmt.Errorf("a link ID is not in canonical base32")
	}
	copy(d[:], buf[4:])
	return d, nil
}

// ParseID parses the text form of a link ID (CIDv1, codec raw, sha2-256,
// lower-case base32 "b…"), as found in "prev" and revoke_claim bodies.
func ParseID(s string) (cid.Cid, error) {
	d, err := parseIDText([]byte(s))
	if err != nil {
		return cid.Undef, fmt.Errorf("sigchain: %w", err)
	}
	return idFromDigest(d), nil
}

func idFromDigest(d [32]byte) cid.Cid {
	mh, err := multihash.Encode(d[:], multihash.SHA2_256)
	if err != nil {
		panic("sigchain: multihash: " + err.Error()) // unreachable: fixed size
	}
	return cid.NewCidV1(cid.Raw, mh)
}

// digestOf returns the SHA-256 digest inside a link ID, or false if c is
// not a link ID.
func digestOf(c cid.Cid) ([32]byte, bool) {
	var d [32]byte
	if !c.Defined() || c.Version() != 1 || c.Prefix().Codec != cid.Raw {
		return d, false
	}
	dm, err := multihash.Decode(c.Hash())
	if err != nil || dm.Code != multihash.SHA2_256 || len(dm.Digest) != 32 {
		return d, false
	}
	copy(d[:], dm.Digest)
	return d, true
}

// IDFromDigest returns the link ID (§4 of docs/spec/sigchain.md) whose
// SHA-256 digest is d. Group chains name their links the same way.
func IDFromDigest(d [32]byte) cid.Cid { return idFromDigest(d) }

// DigestOf returns the SHA-256 digest inside a link ID, and false if c is
// not a CIDv1 with codec raw and a sha2-256 multihash.
func DigestOf(c cid.Cid) ([32]byte, bool) { return digestOf(c) }

func appendIDText(dst []byte, d [32]byte) []byte {
	var buf [36]byte
	copy(buf[:], cidPrefix)
	copy(buf[4:], d[:])
	dst = append(dst, 'b')
	return b32.AppendEncode(dst, buf[:])
}

// Bytes returns the link's canonical signed bytes: what a server stores and
// serves, and what the ID hashes. Do not modify the result.
func (l *Link) Bytes() []byte { return l.raw }

// ID returns the link ID: CIDv1, codec raw, sha2-256 of [Link.Bytes].
func (l *Link) ID() cid.Cid { return idFromDigest(l.id) }

// Version returns the link format version (always [Version]).
func (l *Link) Version() int { return l.version }

// Seqno returns the link's position in its chain, counting from 1.
func (l *Link) Seqno() uint64 { return l.seqno }

// Prev returns the ID of the previous link, or cid.Undef for the eldest.
func (l *Link) Prev() cid.Cid {
	if !l.hasPrev {
		return cid.Undef
	}
	return idFromDigest(l.prev)
}

// Ctime returns the link's creation time claimed by its signer (seconds).
func (l *Link) Ctime() time.Time { return time.Unix(l.ctime, 0).UTC() }

// Key returns the key that signed the link.
func (l *Link) Key() kez.PublicKey { return l.key }

// Type returns the link type, e.g. [TypeEldest].
func (l *Link) Type() string { return l.typ }

// IgnoreIfUnsupported reports whether a reader that does not know the type
// may skip the link instead of rejecting the chain.
func (l *Link) IgnoreIfUnsupported() bool { return l.ignore }

// Body returns the body, canonical JSON. Do not modify the result.
func (l *Link) Body() []byte { return l.raw[l.bodyOff:l.bodyEnd] }

// Signature returns a copy of the ed25519 signature.
func (l *Link) Signature() []byte { return bytes.Clone(l.sig[:]) }

// SignedPayload returns the exact bytes the signature covers (before the
// [kez.SignedMessage] framing with [kez.ContextSigchainLink]): the link
// without its "sig" field.
func (l *Link) SignedPayload() []byte {
	out := make([]byte, l.sigStart+1)
	copy(out, l.raw[:l.sigStart])
	out[l.sigStart] = '}'
	return out
}

// MarshalJSON returns [Link.Bytes]. Canonical bytes pass through
// encoding/json unchanged, so links can be embedded in JSON documents.
func (l *Link) MarshalJSON() ([]byte, error) { return l.raw, nil }

// UnmarshalJSON parses a link strictly, as [ParseLink].
func (l *Link) UnmarshalJSON(b []byte) error {
	p, err := ParseLink(b)
	if err != nil {
		return err
	}
	*l = *p
	return nil
}

// String returns a short description for logs: seqno, type and ID.
func (l *Link) String() string {
	return "link " + strconv.FormatUint(l.seqno, 10) + " " + l.typ + " " + string(appendIDText(nil, l.id))
}

// LinkOption changes how [NewLink] builds a link.
type LinkOption func(*linkConfig)

type linkConfig struct{ ignore bool }

// IgnoreIfUnsupported marks the link so that readers that do not know its
// type skip it instead of rejecting the chain. Use it for optional
// extensions; known types are always enforced.
func IgnoreIfUnsupported() LinkOption { return func(c *linkConfig) { c.ignore = true } }

// NewLink builds and signs the link that follows prev (nil for the eldest
// link, which must have type [TypeEldest]). body is any JSON object (it is
// rewritten with [Canonicalize]); use the typed constructors such as
// [EldestBody] rather than writing JSON by hand. ctime is truncated to
// seconds. The new link is checked against prev with the same rules as
// [State.Extend] (except the future-ctime check), so an invalid link is
// never signed. signer must be the chain's key.
func NewLink(signer kez.Signer, prev *State, typ string, body []byte, ctime time.Time, opts ...LinkOption) (*Link, error) {
	var cfg linkConfig
	for _, o := range opts {
		o(&cfg)
	}
	if len(typ) == 0 || len(typ) > MaxTypeLen {
		return nil, fmt.Errorf("sigchain: type must be 1 to %d characters", MaxTypeLen)
	}
	for i := 0; i < len(typ); i++ {
		if !isTypeByte(typ[i]) {
			return nil, fmt.Errorf("sigchain: type %q may use only a-z, 0-9 and _", typ)
		}
	}
	cb, err := Canonicalize(body)
	if err != nil {
		return nil, err
	}
	ct := ctime.Unix()
	if ct < 0 || ct > maxSafeInt {
		return nil, fmt.Errorf("sigchain: ctime %v is out of range", ctime)
	}
	seqno := uint64(1)
	if prev != nil {
		seqno = prev.seqno + 1
	}
	buf := make([]byte, 0, 400+len(cb))
	buf = append(buf, fV...)
	buf = strconv.AppendInt(buf, Version, 10)
	buf = append(buf, fSeqno...)
	buf = strconv.AppendUint(buf, seqno, 10)
	buf = append(buf, fPrev...)
	if prev == nil {
		buf = append(buf, "null"...)
	} else {
		buf = append(buf, '"')
		buf = appendIDText(buf, prev.head)
		buf = append(buf, '"')
	}
	buf = append(buf, fCtime...)
	buf = strconv.AppendInt(buf, ct, 10)
	buf = append(buf, fKey...)
	buf = append(buf, signer.PublicKey().String()...)
	buf = append(buf, '"')
	buf = append(buf, fType...)
	buf = append(buf, typ...)
	buf = append(buf, '"')
	buf = append(buf, fIgnore...)
	buf = strconv.AppendBool(buf, cfg.ignore)
	buf = append(buf, fBody...)
	buf = append(buf, cb...)
	payload := append(bytes.Clone(buf), '}')
	sig, err := signer.Sign(kez.ContextSigchainLink, payload)
	if err != nil {
		return nil, fmt.Errorf("sigchain: signing link: %w", err)
	}
	if len(sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("sigchain: signer returned a %d-byte signature", len(sig))
	}
	buf = append(buf, fSig...)
	buf = b64.AppendEncode(buf, sig)
	buf = append(buf, '"', '}')
	l, err := ParseLink(buf)
	if err != nil {
		return nil, fmt.Errorf("sigchain: building link: %w", err)
	}
	at := func() time.Time { return time.Unix(ct, 0) }
	if prev == nil {
		_, err = Verify([]*Link{l}, WithClock(at))
	} else {
		_, err = prev.Extend([]*Link{l}, WithClock(at))
	}
	if err != nil {
		return nil, err
	}
	return l, nil
}
