package files

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/group"
	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// ErrNotGroupMember reports a share to a group ([ToGroup]) by a user who
// is not a current member of it: nothing is shared. It wraps
// group.ErrNotMember.
var ErrNotGroupMember = fmt.Errorf("files: you are not a member of that group: %w", group.ErrNotMember)

// ErrOfferMismatch reports a fetch with a group file offer
// ([WithFileKey]) that the owner's manifest does not confirm: the owner's
// handle names another key than the offer's, the name or CID asked for is
// not the offer's, or the owner's entry for that CID is not shared with
// the offer's group (or is for another size). Nothing is fetched.
var ErrOfferMismatch = errors.New("files: the owner's shared files do not match the group's offer")

// ErrSharedWithGroup reports a fetch (without [WithFileKey]) of an entry
// shared with a group: its key comes with the offer in the group. It is
// returned together with ErrForbidden.
var ErrSharedWithGroup = errors.New("files: the file is shared with a group, and its key comes with the offer in the group")

// Group names the group a private share goes to (see [ToGroup]).
type Group struct {
	// Name is the group's address, NAME@domain; a bare NAME takes the
	// home domain.
	Name string
	// SigServer is the base URL of the sig-server of the group's domain,
	// which keeps its membership chain; "" means the user's own
	// sig-server (right for a group of the home domain).
	SigServer string
	// Pin, if its Seqno is not zero, is the group's chain as the caller
	// verified it (a chat client pins it): the chain read at share time
	// must be it or extend it, else the share fails with group.ErrFork
	// or group.ErrRollback.
	Pin group.Pin
}

// ToGroup makes the share private to the people who are members of the
// group g when it is shared (docs/spec/manifest.md §7): its membership
// chain is read from the group's sig-server and verified, the user must
// be a current member ([ErrNotGroupMember]), and the file is encrypted
// under a fresh key that is not wrapped in the manifest: the entry names
// the group by its ID, and the key goes to the members in the group, as
// the offer Share returns (SharedFile.Offer, for
// chat.Client.SendGroupFile), so a group of any size is reached. The
// share index records the group, and the serving node sends the blob only
// to a current device of a member since the share (or before it):
// someone added later read no offer and is refused, someone removed is
// refused from the removal on (within the minute the node keeps a
// group's chain). ToGroup and [To] do not combine.
func ToGroup(g Group) ShareOption {
	return func(c *shareConfig) { c.group = &g }
}

// groupRef is the group of a private share, as the share index records
// it: the chain at share time, and where it is read.
type groupRef struct {
	name      string
	id        [32]byte
	seqno     uint64
	head      string // the head link's CID, canonical text
	sigServer string
}

// pin is the chain at share time, which every later read must extend.
func (g *groupRef) pin() (group.Pin, error) {
	c, err := cid.Decode(g.head)
	if err != nil {
		return group.Pin{}, fmt.Errorf("files: the share index holds a bad group head %q: %w", g.head, err)
	}
	return group.Pin{Group: g.name, ID: g.id, Seqno: g.seqno, Head: c}, nil
}

func (g *groupRef) key() string { return g.name + " " + hex.EncodeToString(g.id[:]) }

// groupTarget reads and verifies the chain of the group g for a share and
// returns it with what the index records.
func (s *Sharing) groupTarget(ctx context.Context, g Group) (*group.State, *groupRef, error) {
	h, err := s.resolverRules().Parse(g.Name)
	if err != nil {
		return nil, nil, fmt.Errorf("files: group %s: %w", g.Name, err)
	}
	ref := &groupRef{name: h.String(), sigServer: strings.TrimRight(g.SigServer, "/")}
	if ref.sigServer == "" {
		if s.sigc == nil {
			return nil, nil, ErrNoSigServer
		}
		ref.sigServer = s.sigc.BaseURL
	}
	st, err := s.loadGroup(ctx, ref, nil)
	if err != nil {
		return nil, nil, err
	}
	if g.Pin.Seqno != 0 {
		if err := st.CheckPin(g.Pin); err != nil {
			return nil, nil, fmt.Errorf("files: group %s: %w", ref.name, err)
		}
	}
	if _, ok := st.Member(s.me); !ok {
		return nil, nil, fmt.Errorf("%w: %s", ErrNotGroupMember, ref.name)
	}
	p := st.Pin()
	ref.id, ref.seqno, ref.head = p.ID, p.Seqno, p.Head.String()
	return st, ref, nil
}

// loadGroup reads the chain of the group ref names from its sig-server
// and verifies it (from known on, if given), checking the devices that
// signed links against their persons' own verified sigchains.
func (s *Sharing) loadGroup(ctx context.Context, ref *groupRef, known *group.State) (*group.State, error) {
	h, err := s.resolverRules().Parse(ref.name)
	if err != nil {
		return nil, fmt.Errorf("files: group %s: %w", ref.name, err)
	}
	hc, err := s.resolver.ClientFor(h.Domain, ref.sigServer)
	if err != nil {
		return nil, fmt.Errorf("files: the sig-server of group %s: %w", ref.name, err)
	}
	// As group.Client.Load, with the handles the links name at hand for
	// the device checks: from the known head on (it must still be
	// there), else the whole chain.
	var since uint64
	if known != nil {
		since = known.Seqno() - 1
	}
	links, hd, err := group.NewClient(ref.sigServer, hc).Fetch(ctx, ref.name, since)
	switch {
	case known != nil && errors.Is(err, group.ErrNotFound):
		return nil, fmt.Errorf("files: group %s: %w: its sig-server no longer has it", ref.name, group.ErrRollback)
	case err != nil:
		return nil, fmt.Errorf("files: reading group %s: %w", ref.name, err)
	}
	check := group.ChainDeviceChecker(s.personChain(known, links))
	if known == nil {
		st, err := group.Verify(ctx, links, check)
		if err != nil {
			return nil, fmt.Errorf("files: group %s: %w", ref.name, err)
		}
		return st, nil
	}
	if len(links) == 0 || hd.Seqno < known.Seqno() {
		return nil, fmt.Errorf("files: group %s: %w: its sig-server's head is link %d, the one read before %d", ref.name, group.ErrRollback, hd.Seqno, known.Seqno())
	}
	if l, err := group.ParseLink(links[0]); err != nil || !l.ID().Equals(known.Head()) {
		return nil, fmt.Errorf("files: group %s: %w: its sig-server shows another link %d than the one read before", ref.name, group.ErrFork, known.Seqno())
	}
	st, err := known.Extend(ctx, links[1:], check)
	if err != nil {
		return nil, fmt.Errorf("files: group %s: %w", ref.name, err)
	}
	return st, nil
}

// personChain returns the lookup of a group's [group.ChainDeviceChecker]:
// a person's verified sigchain, found by the handle the group gave them
// (in known, or in an add or create link of links), which must still name
// their key; the user's own from their sig-server.
func (s *Sharing) personChain(known *group.State, links [][]byte) func(context.Context, kez.PublicKey) (*sigchain.State, error) {
	hs := map[kez.PublicKey]string{}
	if known != nil {
		for _, m := range known.Members() {
			hs[m.Key] = m.Handle
		}
	}
	for _, b := range links {
		l, err := group.ParseLink(b)
		if err != nil {
			continue // verification says why
		}
		var body struct {
			Handle  string
			Members []struct{ Handle, Key string }
		}
		if json.Unmarshal(l.Body(), &body) != nil {
			continue
		}
		if l.Type() == group.TypeCreate {
			hs[l.By()] = body.Handle
		}
		for _, m := range body.Members {
			if k, err := kez.ParsePublicKey(m.Key); err == nil {
				hs[k] = m.Handle
			}
		}
	}
	return func(ctx context.Context, person kez.PublicKey) (*sigchain.State, error) {
		if person == s.me {
			return s.ownChain(ctx)
		}
		handle, ok := hs[person]
		if !ok {
			return nil, fmt.Errorf("files: %s is not named in the group's chain", person)
		}
		h, err := s.resolverRules().Parse(handle)
		if err != nil {
			return nil, err
		}
		res, err := s.resolver.ResolveFresh(ctx, h, nil)
		if err != nil {
			return nil, err
		}
		if res.Key != person {
			return nil, fmt.Errorf("%w: the group names %s with the key %s, the handle now names %s", handles.ErrMismatch, handle, person, res.Key)
		}
		return res.State, nil
	}
}

// groupRefresh is how long the serving node trusts a group's chain it
// read, and the least time between two reads of it.
const groupRefresh = time.Minute

// maxGroupStates bounds the groups' chains the node keeps.
const maxGroupStates = 1024

// groupStates keeps the verified chains of the groups that private shares
// went to, to tell who is still a member.
type groupStates struct {
	mu sync.Mutex
	m  map[string]*groupState
}

type groupState struct {
	mu      sync.Mutex // held while reading: one read at a time
	st      *group.State
	ok      bool      // st is the chain as last read, and extends the share-time pin
	fetched time.Time // of the last attempt, successful or not
}

func (gs *groupStates) get(key string) *groupState {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	if gs.m == nil || len(gs.m) >= maxGroupStates {
		gs.m = make(map[string]*groupState)
	}
	e := gs.m[key]
	if e == nil {
		e = &groupState{}
		gs.m[key] = e
	}
	return e
}

// current returns the chain of the group g as read at most groupRefresh
// ago, nil if it cannot be trusted now. The chain is read again at most
// once per groupRefresh whatever the requests; a read that fails, or a
// chain that does not extend the one recorded at share time (another
// group under the name, a fork, a rollback), gives nil until the next
// read: everyone but the sharer is refused.
func (gs *groupStates) current(ctx context.Context, s *Sharing, g *groupRef) *group.State {
	e := gs.get(g.key())
	e.mu.Lock()
	defer e.mu.Unlock()
	if now := s.now(); e.fetched.IsZero() || now.Sub(e.fetched) >= groupRefresh || now.Before(e.fetched) {
		e.fetched = now
		e.ok = false
		st, err := s.groupFor(ctx, g, e.st)
		if err != nil {
			s.log.Warn("files: reading a group's chain to check a member", "group", g.name, "err", err)
			e.st = nil // read it whole next time
		} else {
			e.st, e.ok = st, true
		}
	}
	if !e.ok {
		return nil
	}
	return e.st
}

// groupFor reads the chain of g (from known on) and checks it against
// what the share index recorded at share time.
func (s *Sharing) groupFor(ctx context.Context, g *groupRef, known *group.State) (*group.State, error) {
	pin, err := g.pin()
	if err != nil {
		return nil, err
	}
	st, err := s.loadGroup(ctx, g, known)
	if err != nil {
		return nil, err
	}
	if err := st.CheckPin(pin); err != nil {
		return nil, fmt.Errorf("files: group %s: %w", g.name, err)
	}
	return st, nil
}
