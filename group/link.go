package group

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// Version is the link format version this package writes and reads.
const Version = 1

// Limits (docs/spec/group.md §4).
const (
	// MaxLinkSize bounds one signed link in bytes.
	MaxLinkSize = 64 << 10
	// MaxMembers bounds the current members of a group, the owner included.
	MaxMembers = 1024
	// MaxMembersPerLink bounds the members one add or remove link names.
	MaxMembersPerLink = 256
	// MaxLinks bounds the links of one chain (the highest seqno).
	MaxLinks = 100_000
	// MaxChainBytes bounds the links of one chain together, in bytes:
	// what a client fetches ([Client.Fetch]) and verifies ([Verify],
	// [State.Extend]) whatever a sig-server serves.
	MaxChainBytes = 16 << 20
	// MaxTitleLen bounds a group's title in bytes.
	MaxTitleLen = 64
)

// maxSafeInt is 2^53-1, the largest integer canonical JSON allows.
const maxSafeInt = 1<<53 - 1

// Link types (docs/spec/group.md §4).
const (
	// TypeCreate starts a chain; its signer becomes the owner.
	TypeCreate = "create"
	// TypeAdd adds members ([AddBody]).
	TypeAdd = "add"
	// TypeRemove removes members, or lets a member leave ([RemoveBody]).
	TypeRemove = "remove"
	// TypeRole changes a member's role or transfers ownership ([RoleBody]).
	TypeRole = "role"
	// TypeTitle changes the group's title ([TitleBody]).
	TypeTitle = "title"
)

// Role is a member's role in a group.
type Role string

// The roles. A group has exactly one owner.
const (
	// RoleOwner may do everything but leave; it may add admins, change
	// roles and transfer ownership.
	RoleOwner Role = "owner"
	// RoleAdmin may add and remove members and change the title.
	RoleAdmin Role = "admin"
	// RoleMember may read, write and leave.
	RoleMember Role = "member"
)

// Valid reports whether r is one of the three roles.
func (r Role) Valid() bool { return r == RoleOwner || r == RoleAdmin || r == RoleMember }

// NewMember is one entry of an add link: a person, the handle they go by
// and the role they get.
type NewMember struct {
	Key    kez.PublicKey // the person's primary key
	Handle string        // "bob@kez.lat"
	Role   Role          // RoleMember or RoleAdmin
}

// Link is one parsed group link: well formed and signed by its key, not
// yet checked against a chain (that is [Verify] and [State.Extend]). It is
// immutable and safe for concurrent use.
type Link struct {
	raw      []byte
	sigStart int // index of `,"sig":` in raw
	id       [32]byte

	group   string
	seqno   uint64
	hasPrev bool
	prev    [32]byte
	ctime   int64
	by      kez.PublicKey
	key     kez.PublicKey
	typ     string
	body    []byte // aliases raw

	// The parsed body.
	handle  string          // create
	title   string          // create, title
	members []NewMember     // add, sorted by key text
	keys    []kez.PublicKey // remove, sorted by key text
	roleKey kez.PublicKey   // role
	role    Role            // role
}

var b64 = base64.RawURLEncoding.Strict()

// envelope is the decoding target of a link; a link is accepted only when
// re-encoding it gives back exactly its bytes.
type envelope struct {
	V     int             `json:"v"`
	Group string          `json:"group"`
	Seqno uint64          `json:"seqno"`
	Prev  *string         `json:"prev"`
	Ctime int64           `json:"ctime"`
	By    string          `json:"by"`
	Key   string          `json:"key"`
	Type  string          `json:"type"`
	Body  json.RawMessage `json:"body"`
	Sig   string          `json:"sig"`
}

func malformed(format string, a ...any) error {
	return fmt.Errorf("%w: %w: %s", ErrInvalid, ErrMalformed, fmt.Sprintf(format, a...))
}

// ParseLink decodes one link from its exact canonical bytes and checks
// its signature by its key (context [kez.ContextGroupLink]) and its body's
// form. Any other byte form of the same content is refused, so a link has
// one encoding and one ID. Errors wrap [ErrInvalid] and [ErrMalformed] or
// [ErrBadSignature]. The link keeps its own copy of b.
func ParseLink(b []byte) (*Link, error) {
	if len(b) > MaxLinkSize {
		return nil, fmt.Errorf("%w: %w: %w: the link is %d bytes, the limit is %d", ErrInvalid, ErrMalformed, ErrTooLarge, len(b), MaxLinkSize)
	}
	var e envelope
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, malformed("%v", err)
	}
	if e.V != Version {
		return nil, malformed("version %d is not supported (this reader knows version %d)", e.V, Version)
	}
	l := &Link{raw: bytes.Clone(b), group: e.Group, seqno: e.Seqno, ctime: e.Ctime, typ: e.Type}
	if _, err := checkAddress(e.Group); err != nil {
		return nil, malformed("group: %v", err)
	}
	if l.seqno == 0 || l.seqno > MaxLinks {
		return nil, malformed("seqno %d is outside 1 to %d", l.seqno, MaxLinks)
	}
	if e.Prev != nil {
		d, err := parseID(*e.Prev)
		if err != nil {
			return nil, malformed("prev: %v", err)
		}
		l.hasPrev, l.prev = true, d
	}
	if l.ctime < 0 || l.ctime > maxSafeInt {
		return nil, malformed("ctime %d is out of range", l.ctime)
	}
	var err error
	if l.by, err = kez.ParsePublicKey(e.By); err != nil {
		return nil, malformed("by: %v", err)
	}
	if l.key, err = kez.ParsePublicKey(e.Key); err != nil {
		return nil, malformed("key: %v", err)
	}
	sig, err := b64.DecodeString(e.Sig)
	if err != nil || len(sig) != 64 {
		return nil, malformed("sig is not 64 bytes of unpadded base64url")
	}
	var prev *[32]byte
	if l.hasPrev {
		prev = &l.prev
	}
	head := appendHead(nil, l.group, l.seqno, prev, l.ctime, l.by, l.key, l.typ, e.Body)
	want := appendSig(bytes.Clone(head), sig)
	if !bytes.Equal(want, b) {
		return nil, malformed("not the canonical form (%s)", firstDiff(want, b))
	}
	l.sigStart = len(head)
	l.body = l.raw[len(head)-len(e.Body) : len(head)]
	if err := l.parseBody(); err != nil {
		return nil, fmt.Errorf("%w: %w: %s body: %w", ErrInvalid, ErrMalformed, l.typ, err)
	}
	if err := l.key.Verify(kez.ContextGroupLink, l.SignedPayload(), sig); err != nil {
		return nil, fmt.Errorf("%w: %w: the signature does not verify with key %s", ErrInvalid, ErrBadSignature, l.key)
	}
	l.id = sha256.Sum256(l.raw)
	return l, nil
}

// firstDiff describes where two byte strings part.
func firstDiff(want, got []byte) string {
	i := 0
	for i < len(want) && i < len(got) && want[i] == got[i] {
		i++
	}
	return "the bytes differ from the canonical encoding at byte " + strconv.Itoa(i)
}

// appendHead appends the link without its signature and closing brace.
func appendHead(dst []byte, group string, seqno uint64, prev *[32]byte, ctime int64, by, key kez.PublicKey, typ string, body []byte) []byte {
	dst = append(dst, `{"v":`...)
	dst = strconv.AppendInt(dst, Version, 10)
	dst = append(dst, `,"group":`...)
	dst = appendString(dst, group)
	dst = append(dst, `,"seqno":`...)
	dst = strconv.AppendUint(dst, seqno, 10)
	dst = append(dst, `,"prev":`...)
	if prev == nil {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, '"')
		dst = append(dst, cidOf(*prev).String()...)
		dst = append(dst, '"')
	}
	dst = append(dst, `,"ctime":`...)
	dst = strconv.AppendInt(dst, ctime, 10)
	dst = append(dst, `,"by":"`...)
	dst = append(dst, by.String()...)
	dst = append(dst, `","key":"`...)
	dst = append(dst, key.String()...)
	dst = append(dst, `","type":`...)
	dst = appendString(dst, typ)
	dst = append(dst, `,"body":`...)
	return append(dst, body...)
}

func appendSig(head, sig []byte) []byte {
	head = append(head, `,"sig":"`...)
	head = b64.AppendEncode(head, sig)
	return append(head, '"', '}')
}

// appendString appends s as a canonical JSON string (the rules of
// encoding/json, docs/spec/sigchain.md §1).
func appendString(dst []byte, s string) []byte {
	b, _ := json.Marshal(s) // a string always marshals
	return append(dst, b...)
}

// parseBody checks the body's exact form for the link's type and keeps
// its values.
func (l *Link) parseBody() error {
	var canon []byte
	switch l.typ {
	case TypeCreate:
		var v struct{ Handle, Title string }
		if err := json.Unmarshal(l.body, &v); err != nil {
			return err
		}
		h, err := checkAddress(v.Handle)
		if err != nil {
			return fmt.Errorf("handle: %w", err)
		}
		g, _ := checkAddress(l.group)
		if h.Domain != g.Domain {
			return fmt.Errorf("the creator's handle %s is not of the group's domain %s", v.Handle, g.Domain)
		}
		if err := CheckTitle(v.Title); err != nil {
			return err
		}
		l.handle, l.title = v.Handle, v.Title
		canon = createBody(v.Handle, v.Title)
	case TypeAdd:
		var v struct {
			Members []struct{ Handle, Key, Role string }
		}
		if err := json.Unmarshal(l.body, &v); err != nil {
			return err
		}
		if n := len(v.Members); n == 0 || n > MaxMembersPerLink {
			return fmt.Errorf("%w: an add names 1 to %d members, not %d", ErrTooManyMembers, MaxMembersPerLink, n)
		}
		l.members = make([]NewMember, len(v.Members))
		for i, m := range v.Members {
			k, err := kez.ParsePublicKey(m.Key)
			if err != nil {
				return fmt.Errorf("member %d: %w", i, err)
			}
			if _, err := checkAddress(m.Handle); err != nil {
				return fmt.Errorf("member %d: handle: %w", i, err)
			}
			if r := Role(m.Role); r != RoleMember && r != RoleAdmin {
				return fmt.Errorf("member %d: role %q is not member or admin", i, m.Role)
			}
			l.members[i] = NewMember{Key: k, Handle: m.Handle, Role: Role(m.Role)}
		}
		for i := 1; i < len(l.members); i++ {
			if l.members[i].Key == l.members[i-1].Key {
				return fmt.Errorf("member %s is named twice", l.members[i].Key)
			}
		}
		canon = AddBody(l.members)
	case TypeRemove:
		var v struct{ Members []string }
		if err := json.Unmarshal(l.body, &v); err != nil {
			return err
		}
		if err := checkCount(len(v.Members)); err != nil {
			return err
		}
		l.keys = make([]kez.PublicKey, len(v.Members))
		for i, s := range v.Members {
			k, err := kez.ParsePublicKey(s)
			if err != nil {
				return fmt.Errorf("member %d: %w", i, err)
			}
			if i > 0 && k == l.keys[i-1] {
				return fmt.Errorf("member %s is named twice", k)
			}
			l.keys[i] = k
		}
		canon = RemoveBody(l.keys...)
	case TypeRole:
		var v struct{ Key, Role string }
		if err := json.Unmarshal(l.body, &v); err != nil {
			return err
		}
		k, err := kez.ParsePublicKey(v.Key)
		if err != nil {
			return fmt.Errorf("key: %w", err)
		}
		if !Role(v.Role).Valid() {
			return fmt.Errorf("role %q is not owner, admin or member", v.Role)
		}
		l.roleKey, l.role = k, Role(v.Role)
		canon = RoleBody(k, l.role)
	case TypeTitle:
		var v struct{ Title string }
		if err := json.Unmarshal(l.body, &v); err != nil {
			return err
		}
		if err := CheckTitle(v.Title); err != nil {
			return err
		}
		l.title = v.Title
		canon = TitleBody(v.Title)
	default:
		return fmt.Errorf("type %q is not create, add, remove, role or title", l.typ)
	}
	if !bytes.Equal(canon, l.body) {
		return fmt.Errorf("not the canonical form (%s)", firstDiff(canon, l.body))
	}
	return nil
}

// checkCount checks the number of members an add or remove link names.
func checkCount(n int) error {
	switch {
	case n == 0:
		return errors.New("no member is named")
	case n > MaxMembersPerLink:
		return fmt.Errorf("%w: %d members are named, at most %d", ErrTooManyMembers, n, MaxMembersPerLink)
	}
	return nil
}

// checkAddress checks a group name or a handle: name@domain in the normal
// form of [handles.Parse] (development domains allowed).
func checkAddress(s string) (handles.Handle, error) {
	h, err := handles.Rules{AllowLocal: true}.Parse(s)
	if err != nil {
		return h, err
	}
	if h.String() != s {
		return h, fmt.Errorf("%q is not in its normal form %q", s, h.String())
	}
	return h, nil
}

// CheckName reports whether name is a group address in its normal form:
// NAME@domain, NAME following the local-name rules of handles
// ([handles.Parse]), lower case, no leading "@".
func CheckName(name string) error {
	if _, err := checkAddress(name); err != nil {
		return fmt.Errorf("group: bad name: %w", err)
	}
	return nil
}

// CheckTitle reports whether t may be a group's title: at most
// [MaxTitleLen] bytes of valid UTF-8, every character printable as Go's
// unicode.IsPrint says with the Unicode 15.0.0 tables (letters, marks,
// numbers, punctuation, symbols and U+0020), the rule of device names
// ([sigchain.CheckDeviceName]). Control and format characters (bidi
// overrides, zero-width characters), line and paragraph separators and
// other spaces are refused: a title is shown to every member.
func CheckTitle(t string) error {
	if len(t) > MaxTitleLen {
		return fmt.Errorf("title is %d bytes, at most %d", len(t), MaxTitleLen)
	}
	if !utf8.ValidString(t) {
		return errors.New("title is not valid UTF-8")
	}
	if i := strings.IndexFunc(t, func(r rune) bool { return !unicode.IsPrint(r) }); i >= 0 {
		r, _ := utf8.DecodeRuneInString(t[i:])
		return fmt.Errorf("title contains %U, which is not printable (a control, format, separator or unassigned character, or a space other than U+0020)", r)
	}
	return nil
}

func createBody(handle, title string) []byte {
	b := appendString([]byte(`{"handle":`), handle)
	b = append(b, `,"title":`...)
	b = appendString(b, title)
	return append(b, '}')
}

func compareKeys(a, b kez.PublicKey) int { return strings.Compare(a.String(), b.String()) }

// AddBody returns the body of an add link for ms, sorted by key as the
// format requires (ms is not changed).
func AddBody(ms []NewMember) []byte {
	ms = slices.Clone(ms)
	slices.SortStableFunc(ms, func(a, b NewMember) int { return compareKeys(a.Key, b.Key) })
	b := []byte(`{"members":[`)
	for i, m := range ms {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(append(b, `{"handle":`...), m.Handle)
		b = append(append(append(b, `,"key":"`...), m.Key.String()...), '"')
		b = appendString(append(b, `,"role":`...), string(m.Role))
		b = append(b, '}')
	}
	return append(b, "]}"...)
}

// RemoveBody returns the body of a remove link for the persons keys,
// sorted as the format requires.
func RemoveBody(keys ...kez.PublicKey) []byte {
	keys = slices.Clone(keys)
	slices.SortFunc(keys, compareKeys)
	b := []byte(`{"members":[`)
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(append(append(b, '"'), k.String()...), '"')
	}
	return append(b, "]}"...)
}

// RoleBody returns the body of a role link giving person k role r.
func RoleBody(k kez.PublicKey, r Role) []byte {
	b := append(append([]byte(`{"key":"`), k.String()...), `","role":`...)
	return append(appendString(b, string(r)), '}')
}

// TitleBody returns the body of a title link.
func TitleBody(title string) []byte {
	return append(appendString([]byte(`{"title":`), title), '}')
}

// cidOf returns the link ID with SHA-256 digest d: CIDv1, codec raw.
func cidOf(d [32]byte) cid.Cid { return sigchain.IDFromDigest(d) }

// digestOf returns the SHA-256 digest inside a link ID.
func digestOf(c cid.Cid) ([32]byte, bool) { return sigchain.DigestOf(c) }

// parseID parses the one text form of a link ID (sigchain's).
func parseID(s string) ([32]byte, error) {
	c, err := sigchain.ParseID(s)
	if err != nil {
		return [32]byte{}, err
	}
	d, _ := digestOf(c)
	return d, nil
}

// Bytes returns the link's exact signed bytes. Do not modify the result.
func (l *Link) Bytes() []byte { return l.raw }

// ID returns the link ID: CIDv1, codec raw, sha2-256 of [Link.Bytes].
func (l *Link) ID() cid.Cid { return cidOf(l.id) }

// Group returns the group's address, "name@domain".
func (l *Link) Group() string { return l.group }

// Seqno returns the link's position in its chain, from 1.
func (l *Link) Seqno() uint64 { return l.seqno }

// Prev returns the previous link's ID, or cid.Undef for a create link.
func (l *Link) Prev() cid.Cid {
	if !l.hasPrev {
		return cid.Undef
	}
	return cidOf(l.prev)
}

// Ctime returns the creation time its signer claims (whole seconds).
func (l *Link) Ctime() time.Time { return time.Unix(l.ctime, 0).UTC() }

// By returns the acting member's person key.
func (l *Link) By() kez.PublicKey { return l.by }

// Key returns the key that signed the link: [Link.By] or one of its
// devices.
func (l *Link) Key() kez.PublicKey { return l.key }

// Type returns the link type, e.g. [TypeAdd].
func (l *Link) Type() string { return l.typ }

// Body returns the body, canonical JSON. Do not modify the result.
func (l *Link) Body() []byte { return l.body }

// SignedPayload returns the bytes the signature covers (before the
// [kez.SignedMessage] framing): the link without its "sig" field.
func (l *Link) SignedPayload() []byte {
	out := make([]byte, l.sigStart+1)
	copy(out, l.raw[:l.sigStart])
	out[l.sigStart] = '}'
	return out
}

// String describes the link for logs: group, seqno, type and ID.
func (l *Link) String() string {
	return "group link " + l.group + " " + strconv.FormatUint(l.seqno, 10) + " " + l.typ + " " + l.ID().String()
}
