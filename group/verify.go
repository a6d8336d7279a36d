package group

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/kez"
)

// Errors. Every broken rule of a chain is a *[LinkError] matching
// [ErrInvalid] and, where one fits, a more specific sentinel below
// ([ErrNotAllowed], [ErrNotMember], …) with [errors.Is].
var (
	// ErrInvalid matches every broken format or chain rule.
	ErrInvalid = errors.New("group: invalid chain")
	// ErrMalformed: bytes that are not a link in its one canonical form,
	// or a body that breaks its type's form.
	ErrMalformed = errors.New("malformed link")
	// ErrTooLarge: a link over [MaxLinkSize].
	ErrTooLarge = errors.New("over the size limit")
	// ErrBadSignature: a signature that does not verify with the link's key.
	ErrBadSignature = errors.New("bad signature")
	// ErrBrokenChain: a seqno or prev that does not follow, a create link
	// anywhere but first, another group's link.
	ErrBrokenChain = errors.New("broken chain")
	// ErrBadCtime: a ctime before the previous link's or too far ahead of
	// the clock.
	ErrBadCtime = errors.New("bad ctime")
	// ErrNotAllowed: the acting member's role does not allow the link.
	ErrNotAllowed = errors.New("not allowed for this role")
	// ErrNotMember: the acting person, or a person a remove or role link
	// names, is not a current member.
	ErrNotMember = errors.New("not a member")
	// ErrAlreadyMember: an add link names a current member, or a role
	// link gives a member the role it has.
	ErrAlreadyMember = errors.New("already a member")
	// ErrTooManyMembers: more than [MaxMembers] members, or more than
	// [MaxMembersPerLink] named in one link.
	ErrTooManyMembers = errors.New("too many members")
	// ErrDeviceNotAllowed: the link's key is neither the acting person's
	// key nor a device of that person when the link was made.
	ErrDeviceNotAllowed = errors.New("signing key is not a device of the acting person")
)

// Errors of comparing a chain with a pinned head ([State.CheckPin]). They
// are not [ErrInvalid]: the chain may be valid, but it is not the one seen
// before.
var (
	// ErrFork: another link at a seqno already seen, or another group
	// under the pinned name. Never accept it silently.
	ErrFork = errors.New("group: the chain was rewritten (fork)")
	// ErrRollback: the chain is shorter than the pinned head.
	ErrRollback = errors.New("group: the chain is shorter than the pinned head (rollback)")
)

// LinkError reports the link that broke a rule.
type LinkError struct {
	Seqno uint64 // the link's seqno (for an unparsable link, the one expected)
	Index int    // its position in the slice given to Verify or Extend
	Err   error  // the broken rule, wrapping a sentinel such as ErrNotAllowed
}

// Error names the link and the rule.
func (e *LinkError) Error() string {
	return fmt.Sprintf("group: link %d (index %d) is invalid: %v", e.Seqno, e.Index, e.Err)
}

// Unwrap returns [ErrInvalid] and the cause.
func (e *LinkError) Unwrap() []error { return []error{ErrInvalid, e.Err} }

// DeviceChecker answers whether device was a device of person at time at
// (a link's ctime). It returns nil if so, an error wrapping
// [ErrDeviceNotAllowed] if not, and any other error when it cannot tell
// (the person's sigchain is unavailable): verification then stops with
// that error, which is not [ErrInvalid]. It is called only for links
// whose key is not the acting person's own key.
type DeviceChecker func(ctx context.Context, person, device kez.PublicKey, at time.Time) error

// DefaultMaxFuture is how far a link's ctime may lie ahead of the
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

// Member is a current member of a group.
type Member struct {
	Key    kez.PublicKey // the person's primary key
	Handle string        // the handle the add (or create) link gave
	Role   Role
	Since  uint64 // seqno of the link that added this membership
}

// State is a verified chain at its head: the group's name, title, ID,
// members and roles. It is immutable and safe for concurrent use;
// [State.Extend] returns a new State.
type State struct {
	name       string
	title      string
	seqno      uint64
	head       [32]byte
	ctime      int64
	epoch      uint64
	owner      kez.PublicKey
	members    []Member              // add order
	idx        map[kez.PublicKey]int // into members
	removed    []kez.PublicKey       // former members, in the order they went
	ids        [][32]byte            // ids[i]: digest of link i+1
	epochs     []uint64              // seqnos of create, add and remove links
	lastRemove uint64
	size       int64 // the links' bytes together
}

// Name returns the group's address, "name@domain".
func (s *State) Name() string { return s.name }

// Title returns the current title.
func (s *State) Title() string { return s.title }

// ID returns the group ID: the SHA-256 digest in the create link's ID
// (zero for a State not made by [Verify]).
func (s *State) ID() [32]byte {
	if len(s.ids) == 0 {
		return [32]byte{}
	}
	return s.ids[0]
}

// Seqno returns the seqno of the head (the chain's length).
func (s *State) Seqno() uint64 { return s.seqno }

// Head returns the ID of the last link.
func (s *State) Head() cid.Cid { return cidOf(s.head) }

// Ctime returns the last link's ctime.
func (s *State) Ctime() time.Time { return time.Unix(s.ctime, 0).UTC() }

// Epoch returns the seqno of the latest link that changed membership
// (create, add or remove).
func (s *State) Epoch() uint64 { return s.epoch }

// EpochOf returns the epoch in force right after link seqno, and false if
// the chain has no such link.
func (s *State) EpochOf(seqno uint64) (uint64, bool) {
	if seqno == 0 || seqno > s.seqno {
		return 0, false
	}
	i, found := slices.BinarySearch(s.epochs, seqno)
	if !found {
		i-- // epochs[0] is 1, so i ≥ 1 here
	}
	return s.epochs[i], true
}

// RemovalSince reports whether a remove link (a removal or a leave) came
// after link epoch: whoever was removed may hold what was shared at that
// epoch.
func (s *State) RemovalSince(epoch uint64) bool { return s.lastRemove > epoch }

// Owner returns the owner's person key.
func (s *State) Owner() kez.PublicKey { return s.owner }

// Members returns the current members in the order they were added (the
// owner who created the group first).
func (s *State) Members() []Member { return slices.Clone(s.members) }

// Member returns the current member with person key k.
func (s *State) Member(k kez.PublicKey) (Member, bool) {
	i, ok := s.idx[k]
	if !ok {
		return Member{}, false
	}
	return s.members[i], true
}

// Removed returns the persons who were members and are not now (removed
// or left), in the order they went.
func (s *State) Removed() []kez.PublicKey { return slices.Clone(s.removed) }

// Pin returns what a client keeps of the chain to detect a later fork or
// rollback with [State.CheckPin].
func (s *State) Pin() Pin { return Pin{Group: s.name, ID: s.ID(), Seqno: s.seqno, Head: s.Head()} }

// Verify checks a whole chain, create link first, and returns its state.
// It parses each link ([ParseLink]: canonical form, signature), then
// checks seqno and prev, ctime, the type's rules and the roles, and last,
// for a link signed by a device, the device rule with check (nil: every
// device-signed link is refused). Errors are *[LinkError] matching
// [ErrInvalid], or the checker's own error when it cannot answer.
func Verify(ctx context.Context, links [][]byte, check DeviceChecker, opts ...VerifyOption) (*State, error) {
	if len(links) == 0 {
		return nil, &LinkError{Seqno: 1, Err: fmt.Errorf("%w: the chain has no links", ErrBrokenChain)}
	}
	s := &State{}
	if err := s.apply(ctx, links, 0, check, newConfig(opts)); err != nil {
		return nil, err
	}
	return s, nil
}

// Extend verifies links that follow s and returns the new state; s is not
// changed. Leading links that s already has (same seqno, same ID) are
// skipped, so a client may fetch from its pinned seqno; a different link
// at a seqno s has is reported as [ErrFork]. A nil s verifies a whole
// chain, like [Verify].
func (s *State) Extend(ctx context.Context, links [][]byte, check DeviceChecker, opts ...VerifyOption) (*State, error) {
	if s == nil {
		return Verify(ctx, links, check, opts...)
	}
	offset := 0
	for offset < len(links) {
		l, err := ParseLink(links[offset])
		if err != nil {
			return nil, &LinkError{Seqno: s.seqno + 1, Index: offset, Err: err}
		}
		if l.seqno > s.seqno {
			break
		}
		if l.id != s.ids[l.seqno-1] || l.group != s.name {
			return nil, fmt.Errorf("%w: another link at seqno %d", ErrFork, l.seqno)
		}
		offset++
	}
	n := s.clone()
	if err := n.apply(ctx, links[offset:], offset, check, newConfig(opts)); err != nil {
		return nil, err
	}
	return n, nil
}

func (s *State) clone() *State {
	n := *s
	n.members = slices.Clone(s.members)
	n.idx = maps.Clone(s.idx)
	n.removed = slices.Clone(s.removed)
	n.ids = slices.Clip(s.ids)
	n.epochs = slices.Clip(s.epochs)
	return &n
}

func newConfig(opts []VerifyOption) verifyConfig {
	c := verifyConfig{now: time.Now, maxFuture: DefaultMaxFuture}
	for _, o := range opts {
		o(&c)
	}
	return c
}

// apply verifies links and applies them to s in place.
func (s *State) apply(ctx context.Context, links [][]byte, offset int, check DeviceChecker, cfg verifyConfig) error {
	limit := cfg.now().Add(cfg.maxFuture).Unix()
	for i, b := range links {
		if err := ctx.Err(); err != nil {
			return err
		}
		l, err := ParseLink(b)
		if err != nil {
			return &LinkError{Seqno: s.seqno + 1, Index: offset + i, Err: err}
		}
		if s.size+int64(len(b)) > MaxChainBytes {
			return &LinkError{Seqno: l.seqno, Index: offset + i, Err: fmt.Errorf("%w: the chain is over %d bytes", ErrBrokenChain, MaxChainBytes)}
		}
		if err := s.applyLink(ctx, l, limit, check); err != nil {
			if r, ok := err.(ruleError); ok {
				return &LinkError{Seqno: l.seqno, Index: offset + i, Err: r.error}
			}
			return err
		}
	}
	return nil
}

// ruleError marks a broken rule found by applyLink, as opposed to a
// checker's failure to answer.
type ruleError struct{ error }

func rule(kind error, format string, a ...any) error {
	return ruleError{fmt.Errorf("%w: %s", kind, fmt.Sprintf(format, a...))}
}

// applyLink checks one parsed link against s and applies it. limit is the
// latest acceptable ctime.
func (s *State) applyLink(ctx context.Context, l *Link, limit int64, check DeviceChecker) error {
	// 1. Position: seqno, prev, group, type.
	if s.seqno == 0 {
		switch {
		case l.typ != TypeCreate:
			return rule(ErrBrokenChain, "a chain starts with a create link, not %s", l.typ)
		case l.seqno != 1:
			return rule(ErrBrokenChain, "the create link has seqno 1, not %d", l.seqno)
		case l.hasPrev:
			return rule(ErrBrokenChain, "the create link has no prev")
		}
	} else {
		switch {
		case l.group != s.name:
			return rule(ErrBrokenChain, "the link is of group %s, the chain of %s", l.group, s.name)
		case l.seqno != s.seqno+1:
			return rule(ErrBrokenChain, "seqno %d does not follow %d", l.seqno, s.seqno)
		case !l.hasPrev || l.prev != s.head:
			return rule(ErrBrokenChain, "prev is not the ID of link %d", s.seqno)
		case l.typ == TypeCreate:
			return rule(ErrBrokenChain, "only the first link may be a create link")
		}
	}
	// 2. Time.
	if s.seqno > 0 && l.ctime < s.ctime {
		return rule(ErrBadCtime, "ctime %d is before the previous link's %d", l.ctime, s.ctime)
	}
	if l.ctime > limit {
		return rule(ErrBadCtime, "ctime %s is too far in the future", l.Ctime().Format(time.RFC3339))
	}
	// 3. The acting member and the type's rules.
	if err := s.applyBody(l); err != nil {
		return err
	}
	// 4. The device rule, last: it may need the network.
	if l.key != l.by {
		if check == nil {
			return rule(ErrDeviceNotAllowed, "signed by %s for %s, and no device checker was given", l.key, l.by)
		}
		if err := check(ctx, l.by, l.key, l.Ctime()); err != nil {
			if errors.Is(err, ErrDeviceNotAllowed) {
				return ruleError{fmt.Errorf("device %s of %s: %w", l.key, l.by, err)}
			}
			return fmt.Errorf("group: checking device %s of %s: %w", l.key, l.by, err)
		}
	}
	s.seqno, s.head, s.ctime = l.seqno, l.id, l.ctime
	s.ids = append(s.ids, l.id)
	s.size += int64(len(l.Bytes()))
	return nil
}

// applyBody checks the roles and rules of l's type and applies it.
func (s *State) applyBody(l *Link) error {
	if l.typ == TypeCreate {
		s.name, s.title, s.owner = l.group, l.title, l.by
		s.idx = map[kez.PublicKey]int{}
		s.addMember(Member{Key: l.by, Handle: l.handle, Role: RoleOwner, Since: 1})
		s.newEpoch(l.seqno)
		return nil
	}
	actor, ok := s.Member(l.by)
	if !ok {
		return rule(ErrNotMember, "%s is not a member", l.by)
	}
	switch l.typ {
	case TypeAdd:
		if actor.Role == RoleMember {
			return rule(ErrNotAllowed, "a member may not add members")
		}
		for _, m := range l.members {
			if m.Role == RoleAdmin && actor.Role != RoleOwner {
				return rule(ErrNotAllowed, "only the owner may add an admin")
			}
			if _, ok := s.idx[m.Key]; ok {
				return rule(ErrAlreadyMember, "%s is already a member", m.Key)
			}
		}
		if n := len(s.members) + len(l.members); n > MaxMembers {
			return rule(ErrTooManyMembers, "the group would have %d members, at most %d", n, MaxMembers)
		}
		for _, m := range l.members {
			s.addMember(Member{Key: m.Key, Handle: m.Handle, Role: m.Role, Since: l.seqno})
			s.removed = slices.DeleteFunc(s.removed, func(k kez.PublicKey) bool { return k == m.Key })
		}
		s.newEpoch(l.seqno)
	case TypeRemove:
		leaving := len(l.keys) == 1 && l.keys[0] == l.by
		for _, k := range l.keys {
			m, ok := s.Member(k)
			if !ok {
				return rule(ErrNotMember, "%s is not a member", k)
			}
			switch {
			case m.Role == RoleOwner && leaving:
				return rule(ErrNotAllowed, "the owner may not leave; transfer ownership first")
			case m.Role == RoleOwner:
				return rule(ErrNotAllowed, "nobody may remove the owner")
			case leaving:
			case actor.Role == RoleMember:
				return rule(ErrNotAllowed, "a member may remove only itself, alone")
			case actor.Role == RoleAdmin && m.Role == RoleAdmin:
				return rule(ErrNotAllowed, "an admin may not remove an admin (except itself, alone)")
			}
		}
		for _, k := range l.keys {
			s.removeMember(k)
		}
		s.removed = append(s.removed, l.keys...)
		s.lastRemove = l.seqno
		s.newEpoch(l.seqno)
	case TypeRole:
		if actor.Role != RoleOwner {
			return rule(ErrNotAllowed, "only the owner may change roles")
		}
		m, ok := s.Member(l.roleKey)
		switch {
		case !ok:
			return rule(ErrNotMember, "%s is not a member", l.roleKey)
		case m.Key == s.owner:
			return rule(ErrNotAllowed, "the owner's role changes only by a transfer to another member")
		case m.Role == l.role:
			return rule(ErrAlreadyMember, "%s already has the role %s", m.Key, m.Role)
		}
		s.members[s.idx[m.Key]].Role = l.role
		if l.role == RoleOwner {
			s.members[s.idx[s.owner]].Role = RoleAdmin
			s.owner = m.Key
		}
	case TypeTitle:
		if actor.Role == RoleMember {
			return rule(ErrNotAllowed, "a member may not change the title")
		}
		s.title = l.title
	}
	return nil
}

func (s *State) addMember(m Member) {
	s.idx[m.Key] = len(s.members)
	s.members = append(s.members, m)
}

func (s *State) removeMember(k kez.PublicKey) {
	i := s.idx[k]
	s.members = slices.Delete(s.members, i, i+1)
	delete(s.idx, k)
	for j := i; j < len(s.members); j++ {
		s.idx[s.members[j].Key] = j
	}
}

func (s *State) newEpoch(seqno uint64) {
	s.epoch = seqno
	s.epochs = append(s.epochs, seqno)
}
