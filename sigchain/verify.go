package sigchain

import (
	"bytes"
	"cmp"
	"crypto/ecdh"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/kez"
)

// Errors of verification. Every rule violation is a *[LinkError] that
// matches [ErrInvalid] and one of the more specific sentinels below with
// [errors.Is]. A server answers them with 422.
var (
	// ErrInvalid matches every broken chain rule.
	ErrInvalid = errors.New("sigchain: invalid chain")
	// ErrBadSignature: a link's signature does not verify with its key.
	ErrBadSignature = errors.New("bad signature")
	// ErrBrokenChain: a seqno or prev that does not follow the previous
	// link, a missing, duplicate or misplaced eldest link, an empty chain.
	ErrBrokenChain = errors.New("broken chain")
	// ErrWrongKey: a link signed by a key other than the eldest key.
	ErrWrongKey = errors.New("wrong key")
	// ErrBadCtime: a ctime earlier than the previous link's or too far in
	// the future.
	ErrBadCtime = errors.New("bad ctime")
	// ErrBadBody: a known link type with a body that breaks its rules.
	ErrBadBody = errors.New("bad body")
	// ErrUnsupported: a link type this version does not know, without
	// ignore_if_unsupported.
	ErrUnsupported = errors.New("unsupported link type")
)

// Errors of comparing a chain with a pinned head. They are not
// [ErrInvalid]: each chain may be valid on its own, but the server is
// showing something other than what was seen before.
var (
	// ErrFork: a different link (or a different key) at a seqno already
	// seen. The chain was rewritten; never accept it silently.
	ErrFork = errors.New("sigchain: the chain was rewritten (fork): a different link at a seqno already seen")
	// ErrRollback: the chain is shorter than the pinned head.
	ErrRollback = errors.New("sigchain: the chain is shorter than the pinned head (rollback)")
)

// LinkError reports the link that broke a rule.
type LinkError struct {
	Seqno uint64 // the link's seqno as written in it
	Index int    // position in the slice passed to Verify or Extend
	Err   error  // wraps one of ErrBadSignature, ErrBrokenChain, …
}

// Error names the link by seqno and position, then the broken rule.
func (e *LinkError) Error() string {
	if e.Seqno == 0 {
		return fmt.Sprintf("sigchain: invalid chain: %v", e.Err)
	}
	return fmt.Sprintf("sigchain: link %d (index %d) is invalid: %v", e.Seqno, e.Index, e.Err)
}

// Unwrap returns [ErrInvalid] and the specific cause.
func (e *LinkError) Unwrap() []error { return []error{ErrInvalid, e.Err} }

// DefaultMaxFuture is how far a link's ctime may be ahead of the
// verifier's clock.
const DefaultMaxFuture = 10 * time.Minute

// VerifyOption changes how [Verify] and [State.Extend] check links.
type VerifyOption func(*verifyConfig)

type verifyConfig struct {
	now       func() time.Time
	maxFuture time.Duration
}

// WithClock sets the clock that bounds ctime from above (default
// time.Now).
func WithClock(now func() time.Time) VerifyOption {
	return func(c *verifyConfig) { c.now = now }
}

// WithMaxFuture sets how far ahead of the clock a ctime may be (default
// [DefaultMaxFuture]).
func WithMaxFuture(d time.Duration) VerifyOption {
	return func(c *verifyConfig) { c.maxFuture = d }
}

// Claim is an active add_claim of a chain.
type Claim struct {
	ID       cid.Cid   // the add_claim link's ID; revoke_claim names it
	Seqno    uint64    // the add_claim link's seqno
	Prev     string    // the add_claim link's prev: the ID text of the link before it
	Ctime    time.Time // the add_claim link's ctime
	Service  string    // e.g. "github", "nostr", "dns"
	Identity string    // the name on that service
	Proof    string    // where the proof can be checked
}

type claim struct {
	id       [32]byte
	prev     [32]byte
	seqno    uint64
	ctime    int64
	service  string
	identity string
	proof    string
}

// State is the result of verifying a chain: who the chain says its owner
// is at its head. It is immutable and safe for concurrent use; [State.Extend]
// returns a new State. Pin a contact by keeping [State.Pin].
type State struct {
	key         kez.PublicKey
	enc         *ecdh.PublicKey
	encGen      uint32
	encKeys     []EncryptionKey // every generation published, in order
	handle      string
	claims      []claim
	shared      []byte
	sharedSeqno uint64
	seqno       uint64
	head        [32]byte
	ctime       int64
	devices     []device              // primary first, then in add order
	deviceIdx   map[kez.PublicKey]int // index into devices
	current     int                   // devices not revoked
}

// Key returns the chain's primary key (the eldest link's key).
func (s *State) Key() kez.PublicKey { return s.key }

// EncryptionKey returns the current X25519 encryption key.
func (s *State) EncryptionKey() *ecdh.PublicKey { return s.enc }

// EncryptionGeneration returns the generation of [State.EncryptionKey].
func (s *State) EncryptionGeneration() uint32 { return s.encGen }

// EncryptionKey is one generation of a chain's X25519 encryption key: the
// eldest link's or a set_encryption_key link's.
type EncryptionKey struct {
	Generation uint32
	Key        *ecdh.PublicKey
	Seqno      uint64 // the link that published it
}

// EncryptionKeys returns every encryption key generation the chain
// published, oldest first (so the current one last). A device that holds
// the private halves of these can open what was sealed to its person
// (docs/spec/chat.md §8.6).
func (s *State) EncryptionKeys() []EncryptionKey { return slices.Clone(s.encKeys) }

// EncryptionKeyOf returns the key of generation gen, if the chain
// published it.
func (s *State) EncryptionKeyOf(gen uint32) (EncryptionKey, bool) {
	i, ok := slices.BinarySearchFunc(s.encKeys, gen, func(k EncryptionKey, g uint32) int { return cmp.Compare(k.Generation, g) })
	if !ok {
		return EncryptionKey{}, false
	}
	return s.encKeys[i], true
}

// Handle returns the current handle ("alice@kez.lat"), or "" if none.
func (s *State) Handle() string { return s.handle }

// Claims returns the active claims, oldest first.
func (s *State) Claims() []Claim {
	out := make([]Claim, len(s.claims))
	for i, c := range s.claims {
		out[i] = Claim{ID: idFromDigest(c.id), Seqno: c.seqno, Prev: idFromDigest(c.prev).String(), Ctime: time.Unix(c.ctime, 0).UTC(),
			Service: c.service, Identity: c.identity, Proof: c.proof}
	}
	return out
}

// SharedFiles returns a copy of the body of the latest set_shared_files
// link (canonical JSON), or nil if there is none.
func (s *State) SharedFiles() []byte { return bytes.Clone(s.shared) }

// SharedFilesSeqno returns the seqno of the latest set_shared_files link,
// or 0.
func (s *State) SharedFilesSeqno() uint64 { return s.sharedSeqno }

// Head returns the ID of the last link.
func (s *State) Head() cid.Cid { return idFromDigest(s.head) }

// Seqno returns the seqno of the last link (the chain's length).
func (s *State) Seqno() uint64 { return s.seqno }

// Ctime returns the ctime of the last link.
func (s *State) Ctime() time.Time { return time.Unix(s.ctime, 0).UTC() }

// Pin returns what a client remembers of a chain to detect a later fork or
// rollback with [CheckAgainst].
func (s *State) Pin() Pin { return Pin{Key: s.key, Seqno: s.seqno, Head: s.Head()} }

// Pin is a remembered chain head. Its JSON form is
// {"key":"U…","seqno":N,"head":"b…"}.
type Pin struct {
	Key   kez.PublicKey
	Seqno uint64
	Head  cid.Cid
}

type pinJSON struct {
	Key   kez.PublicKey `json:"key"`
	Seqno uint64        `json:"seqno"`
	Head  string        `json:"head"`
}

// MarshalJSON implements json.Marshaler.
func (p Pin) MarshalJSON() ([]byte, error) {
	return json.Marshal(pinJSON{p.Key, p.Seqno, p.Head.String()})
}

// UnmarshalJSON implements json.Unmarshaler.
func (p *Pin) UnmarshalJSON(b []byte) error {
	var j pinJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	h, err := ParseID(j.Head)
	if err != nil {
		return err
	}
	*p = Pin{Key: j.Key, Seqno: j.Seqno, Head: h}
	return nil
}

// Verify checks a whole chain, eldest first, and returns its state. It
// checks every signature (context [kez.ContextSigchainLink]), that seqnos
// count 1, 2, 3… and each prev is the previous link's ID, that every link
// is signed by the eldest key, that ctime never goes backwards nor lies
// more than [DefaultMaxFuture] ahead of the clock, and each known type's
// body rules. Errors are *[LinkError] matching [ErrInvalid].
func Verify(links []*Link, opts ...VerifyOption) (*State, error) {
	if len(links) == 0 {
		return nil, &LinkError{Err: fmt.Errorf("%w: the chain has no links", ErrBrokenChain)}
	}
	s := &State{}
	if err := s.apply(links, 0, newConfig(opts)); err != nil {
		return nil, err
	}
	return s, nil
}

// Extend verifies links that follow s and returns the new state; s is not
// changed. links must start at s.Seqno()+1; a leading copy of s's head link
// is skipped, and a different link at s's head seqno is reported as
// [ErrFork]. A nil s verifies links as a whole chain, like [Verify].
func (s *State) Extend(links []*Link, opts ...VerifyOption) (*State, error) {
	if s == nil {
		return Verify(links, opts...)
	}
	offset := 0
	if len(links) > 0 && links[0].seqno == s.seqno {
		if links[0].id != s.head {
			return nil, fmt.Errorf("%w (seqno %d)", ErrFork, s.seqno)
		}
		links, offset = links[1:], 1
	}
	n := *s
	n.claims = slices.Clone(s.claims)
	n.encKeys = slices.Clip(s.encKeys)
	n.devices = slices.Clone(s.devices)
	n.deviceIdx = maps.Clone(s.deviceIdx)
	if err := n.apply(links, offset, newConfig(opts)); err != nil {
		return nil, err
	}
	return &n, nil
}

func newConfig(opts []VerifyOption) verifyConfig {
	c := verifyConfig{now: time.Now, maxFuture: DefaultMaxFuture}
	for _, o := range opts {
		o(&c)
	}
	return c
}

// signPrefix is the kez signature framing for sigchain links:
// SignedMessage(ContextSigchainLink, msg) == signPrefix || msg.
var signPrefix = func() []byte {
	p, err := kez.SignedMessage(kez.ContextSigchainLink, nil)
	if err != nil {
		panic(err)
	}
	return p
}()

// verifySignature reports whether the link's signature verifies with its
// own key. buf is scratch space, returned for reuse.
func (l *Link) verifySignature(buf []byte) ([]byte, bool) {
	buf = append(append(append(buf[:0], signPrefix...), l.raw[:l.sigStart]...), '}')
	return buf, ed25519.Verify(l.key[:], buf, l.sig[:])
}

// apply verifies and applies links to s in place.
func (s *State) apply(links []*Link, offset int, cfg verifyConfig) error {
	limit := cfg.now().Add(cfg.maxFuture).Unix()
	var msg []byte
	for i, l := range links {
		if l == nil {
			return &LinkError{Seqno: s.seqno + 1, Index: offset + i, Err: fmt.Errorf("%w: link at index %d is nil", ErrBrokenChain, offset+i)}
		}
		fail := func(kind error, format string, a ...any) error {
			return &LinkError{Seqno: l.seqno, Index: offset + i, Err: fmt.Errorf("%w: %s", kind, fmt.Sprintf(format, a...))}
		}
		if s.seqno == 0 {
			switch {
			case l.typ != TypeEldest:
				return fail(ErrBrokenChain, "a chain starts with an eldest link, not %s", l.typ)
			case l.seqno != 1:
				return fail(ErrBrokenChain, "the eldest link has seqno 1, not %d", l.seqno)
			case l.hasPrev:
				return fail(ErrBrokenChain, "the eldest link has no prev")
			}
		} else {
			if l.seqno != s.seqno+1 {
				return fail(ErrBrokenChain, "seqno %d does not follow %d", l.seqno, s.seqno)
			}
			if !l.hasPrev || l.prev != s.head {
				return fail(ErrBrokenChain, "prev is not the ID of link %d", s.seqno)
			}
			if l.typ == TypeEldest {
				return fail(ErrBrokenChain, "only the first link may be eldest")
			}
			if l.key != s.key {
				return fail(ErrWrongKey, "signed by %s, but the chain's key is %s (v1 links are all signed by the eldest key)", l.key, s.key)
			}
			if l.ctime < s.ctime {
				return fail(ErrBadCtime, "ctime %d is before the previous link's %d", l.ctime, s.ctime)
			}
		}
		if l.ctime > limit {
			return fail(ErrBadCtime, "ctime %s is more than %s in the future", l.Ctime().Format(time.RFC3339), cfg.maxFuture)
		}
		var ok bool
		if msg, ok = l.verifySignature(msg); !ok {
			return fail(ErrBadSignature, "the signature does not verify with key %s", l.key)
		}
		if err := s.applyBody(l); err != nil {
			return &LinkError{Seqno: l.seqno, Index: offset + i, Err: err}
		}
		s.seqno, s.head, s.ctime = l.seqno, l.id, l.ctime
	}
	return nil
}

// applyBody checks a link's body by type and applies it.
func (s *State) applyBody(l *Link) error {
	body := l.Body()
	bad := func(err error) error { return fmt.Errorf("%w: %s: %w", ErrBadBody, l.typ, err) }
	limit := MaxBodySize
	switch l.typ {
	case TypeSetSharedFiles:
		limit = MaxSharedFilesBodySize
	case TypeEldest, TypeSetEncryptionKey, TypeAddClaim, TypeRevokeClaim, TypeSetHandle, TypeAddDevice, TypeRevokeDevice:
	default:
		if !l.ignore {
			return fmt.Errorf("%w: %q is not known to this version and the link is not marked ignore_if_unsupported", ErrUnsupported, l.typ)
		}
		return nil
	}
	if len(body) > limit {
		return fmt.Errorf("%w: %w: a %s body is %d bytes, the limit is %d", ErrBadBody, ErrTooLarge, l.typ, len(body), limit)
	}
	switch l.typ {
	case TypeEldest:
		v, err := bodyFields(l.typ, body, "encryption_generation", "encryption_key", "handle", "primary_key")
		if err != nil {
			return bad(err)
		}
		gen, err := uint32Value("encryption_generation", v[0])
		if err != nil {
			return bad(err)
		}
		enc, err := encKeyValue(v[1])
		if err != nil {
			return bad(err)
		}
		h, err := stringValue("handle", v[2])
		if err != nil {
			return bad(err)
		}
		if err := CheckHandle(h); err != nil {
			return bad(err)
		}
		pk, err := stringValue("primary_key", v[3])
		if err != nil {
			return bad(err)
		}
		if pk != l.key.String() {
			return bad(fmt.Errorf("primary_key %q is not the link's key %s", pk, l.key))
		}
		s.key, s.enc, s.encGen, s.handle = l.key, enc, gen, h
		s.encKeys = append(s.encKeys, EncryptionKey{Generation: gen, Key: enc, Seqno: l.seqno})
		s.addDevice(device{key: l.key, name: PrimaryDeviceName, addedSeqno: l.seqno, added: l.ctime})
	case TypeSetEncryptionKey:
		v, err := bodyFields(l.typ, body, "encryption_generation", "encryption_key")
		if err != nil {
			return bad(err)
		}
		gen, err := uint32Value("encryption_generation", v[0])
		if err != nil {
			return bad(err)
		}
		if gen <= s.encGen {
			return bad(fmt.Errorf("encryption_generation %d must be higher than the current %d", gen, s.encGen))
		}
		enc, err := encKeyValue(v[1])
		if err != nil {
			return bad(err)
		}
		s.enc, s.encGen = enc, gen
		s.encKeys = append(s.encKeys, EncryptionKey{Generation: gen, Key: enc, Seqno: l.seqno})
	case TypeAddClaim:
		v, err := bodyFields(l.typ, body, "identity", "proof", "service")
		if err != nil {
			return bad(err)
		}
		var c claim
		if c.identity, err = stringValue("identity", v[0]); err == nil {
			err = checkText("identity", c.identity, MaxClaimIdentityLen)
		}
		if err != nil {
			return bad(err)
		}
		if c.proof, err = stringValue("proof", v[1]); err == nil {
			err = checkText("proof", c.proof, MaxProofLen)
		}
		if err != nil {
			return bad(err)
		}
		if c.service, err = stringValue("service", v[2]); err == nil {
			err = checkService(c.service)
		}
		if err != nil {
			return bad(err)
		}
		if len(s.claims) >= MaxClaims {
			return bad(fmt.Errorf("a chain may have at most %d active claims; revoke one first", MaxClaims))
		}
		c.id, c.prev, c.seqno, c.ctime = l.id, l.prev, l.seqno, l.ctime
		s.claims = append(s.claims, c)
	case TypeRevokeClaim:
		v, err := bodyFields(l.typ, body, "claim")
		if err != nil {
			return bad(err)
		}
		t, err := stringValue("claim", v[0])
		if err != nil {
			return bad(err)
		}
		d, err := parseIDText([]byte(t))
		if err != nil {
			return bad(fmt.Errorf("claim: %w", err))
		}
		i := slices.IndexFunc(s.claims, func(c claim) bool { return c.id == d })
		if i < 0 {
			return bad(fmt.Errorf("claim %s is not an active claim of this chain", t))
		}
		s.claims = slices.Delete(s.claims, i, i+1)
	case TypeSetHandle:
		v, err := bodyFields(l.typ, body, "handle")
		if err != nil {
			return bad(err)
		}
		h, err := stringValue("handle", v[0])
		if err != nil {
			return bad(err)
		}
		if err := CheckHandle(h); err != nil {
			return bad(err)
		}
		s.handle = h
	case TypeSetSharedFiles:
		s.shared, s.sharedSeqno = body, l.seqno
	case TypeAddDevice, TypeRevokeDevice:
		return s.applyDevice(l, bad)
	}
	return nil
}

// CheckAgainst compares fetched links (consecutive, in seqno order, for
// example a whole chain or the links from the pinned seqno on) with a
// pinned head. It returns [ErrRollback] if they end before the pinned
// seqno (or are empty), [ErrFork] if the link at the pinned seqno is a
// different one or the links are signed by another key, and nil if the
// fetched chain contains the pinned head. It does not verify signatures;
// verify with [Verify] or [State.Extend] as well.
func CheckAgainst(pinned Pin, fetched []*Link) error {
	if len(fetched) == 0 {
		return fmt.Errorf("%w: the server shows no links, the pinned head is seqno %d", ErrRollback, pinned.Seqno)
	}
	if fetched[0].key != pinned.Key {
		return fmt.Errorf("%w: the links are signed by %s, the pinned key is %s", ErrFork, fetched[0].key, pinned.Key)
	}
	first, last := fetched[0].seqno, fetched[len(fetched)-1].seqno
	if last < pinned.Seqno {
		return fmt.Errorf("%w: the server shows seqno %d, the pinned head is seqno %d", ErrRollback, last, pinned.Seqno)
	}
	if first > pinned.Seqno {
		return fmt.Errorf("sigchain: the fetched links start at seqno %d, after the pinned head %d; fetch from the pinned seqno to compare", first, pinned.Seqno)
	}
	idx := pinned.Seqno - first
	if idx >= uint64(len(fetched)) || fetched[idx].seqno != pinned.Seqno {
		return fmt.Errorf("%w: the fetched links are not consecutive", ErrInvalid)
	}
	l := fetched[idx]
	want, ok := digestOf(pinned.Head)
	if !ok || l.id != want {
		return fmt.Errorf("%w: at seqno %d the server shows %s, the pinned head is %s", ErrFork, pinned.Seqno, l.ID(), pinned.Head)
	}
	return nil
}
