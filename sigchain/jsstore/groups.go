package jsstore

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/kez-lat/kez-chat/group"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Subject tokens of the groups' membership chains, in the chains'
// stream: <prefix>.groups.<name>.<seqno> holds a link and
// <prefix>.groupsby.<person>.<name> marks a group its person created,
// the name in lower-case hex (a name has dots, which a subject token
// cannot). A key is never "groups" or "groupsby", so no chain's filter
// takes them.
const (
	groupsToken   = "groups"
	creatorsToken = "groupsby"
)

// Groups is the [group.Store] in the chains' stream; see the package
// comment. It is safe for concurrent use, also by many processes sharing
// the stream.
type Groups struct{ s *Store }

var _ group.Store = (*Groups)(nil)

// Groups returns the store's [group.Store].
func (s *Store) Groups() *Groups { return &Groups{s} }

func (g *Groups) prefix(name string) string {
	return g.s.prefix + groupsToken + "." + hex.EncodeToString([]byte(name)) + "."
}

// headAt returns the group's head and its stream sequence, or
// group.ErrNotFound.
func (g *Groups) headAt(ctx context.Context, name string) (group.Head, uint64, error) {
	p := g.prefix(name)
	m, err := g.s.last(ctx, p+">")
	if err != nil {
		return group.Head{}, 0, err
	}
	if m == nil {
		return group.Head{}, 0, group.ErrNotFound
	}
	seqno, err := strconv.ParseUint(strings.TrimPrefix(m.subject, p), 10, 64)
	if !strings.HasPrefix(m.subject, p) || err != nil || seqno == 0 {
		return group.Head{}, 0, fmt.Errorf("jsstore: the stream holds a message on %q, which is not <prefix>.groups.<name>.<seqno>", m.subject)
	}
	return group.Head{Seqno: seqno, ID: linkID(m.data)}, m.seq, nil
}

// Head implements [group.Store]: the last message on
// <prefix>.groups.<name>.>, read from the stream leader.
func (g *Groups) Head(ctx context.Context, name string) (group.Head, error) {
	h, _, err := g.headAt(ctx, name)
	return h, err
}

// Links implements [group.Store] as [Store.Links] does for chains: the
// head from the stream leader, the links up to it from any replica.
func (g *Groups) Links(ctx context.Context, name string, since uint64, limit int) ([][]byte, group.Head, error) {
	h, _, err := g.headAt(ctx, name)
	if err != nil {
		return nil, group.Head{}, err
	}
	if since >= h.Seqno || limit < 1 {
		return nil, h, nil
	}
	n := int(min(h.Seqno-since, uint64(limit)))
	out, err := g.s.seqLinks(ctx, g.prefix(name), "group "+name, since, h.Seqno, n)
	if err != nil {
		return nil, group.Head{}, err
	}
	return out, h, nil
}

// Append implements [group.Store]. It publishes the link on condition
// that the group's subjects did not move since its head was read (the
// expected-last-sequence check of chain appends), so of several appends
// at one seqno, across any number of sig-server replicas, exactly one
// wins. A create link goes in one atomic batch with its creator's
// marker.
func (g *Groups) Append(ctx context.Context, link *group.Link) error {
	s, name := g.s, link.Group()
	h, seq, err := g.headAt(ctx, name)
	if err != nil && !errors.Is(err, group.ErrNotFound) {
		return err
	}
	if !group.Follows(h, link) {
		return &group.ConflictError{Head: h}
	}
	p := g.prefix(name)
	lm := &nats.Msg{Subject: p + strconv.FormatUint(link.Seqno(), 10), Data: link.Bytes(), Header: nats.Header{}}
	lm.Header.Set(jetstream.ExpectedStreamHeader, s.stream)
	lm.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(seq, 10))
	lm.Header.Set(jetstream.ExpectedLastSubjSeqSubjHeader, p+">")
	if link.Seqno() == 1 {
		cm := &nats.Msg{Subject: g.creatorPrefix(link.By()) + hex.EncodeToString([]byte(name)), Header: nats.Header{}}
		err = s.publishBatch(ctx, lm, cm)
	} else {
		_, err = s.js.PublishMsg(ctx, lm)
	}
	if isConflict(err) {
		h, _, herr := g.headAt(ctx, name)
		if herr != nil && !errors.Is(herr, group.ErrNotFound) {
			return fmt.Errorf("jsstore: the group's head moved, and reading it failed: %w", herr)
		}
		return &group.ConflictError{Head: h}
	}
	if err != nil {
		return fmt.Errorf("jsstore: storing link %d of group %s: %w", link.Seqno(), name, err)
	}
	return nil
}

func (g *Groups) creatorPrefix(person kez.PublicKey) string {
	return g.s.prefix + creatorsToken + "." + person.String() + "."
}

// CreatedBy implements [group.Store]: the number of subjects
// <prefix>.groupsby.<person>.*, as the stream leader counts them.
func (g *Groups) CreatedBy(ctx context.Context, person kez.PublicKey) (int, error) {
	info, err := g.s.st.Info(ctx, jetstream.WithSubjectFilter(g.creatorPrefix(person)+"*"))
	if err != nil {
		return 0, fmt.Errorf("jsstore: counting a person's groups: %w", err)
	}
	return len(info.State.Subjects), nil
}
