package jsstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrCannotCollect reports a stream that does not allow purges (it was
// created with deny_purge by an earlier version of this package, which
// JetStream cannot undo), so orphan chains cannot be deleted from it.
var ErrCannotCollect = errors.New("jsstore: the stream denies purges, so orphan chains cannot be collected")

// fenceToken is the last subject token of a collection's fence (see
// CollectOrphans).
const fenceToken = "gc"

// orphanSubject is the subject of key's orphan marker: <prefix>.<key>,
// outside the chain's filter <prefix>.<key>.>.
func (s *Store) orphanSubject(k kez.PublicKey) string { return s.prefix + k.String() }

// CollectOrphans implements [sigchain.OrphanCollector]. Chains are listed
// as orphans by a marker message on <prefix>.<key>, published with
// their eldest link (a chain that names a handle has one too, dropped
// here when found); a chain is collected when its marker was stored
// before cutoff and, read again now, none of its links names a handle.
// Then a fence message (<prefix>.<key>.gc) is published on condition that
// the chain's head is still the one just read, so an append racing the
// collection either lands first (the fence fails, the chain is kept) or
// is refused as a conflict; then the chain and its marker up to the fence
// are purged. Readers treat a fenced chain as absent. It returns
// [ErrCannotCollect] for a stream that denies purges.
func (s *Store) CollectOrphans(ctx context.Context, cutoff time.Time) (int, error) {
	if s.denyPurge {
		return 0, fmt.Errorf("%w (stream %s, created with deny_purge by an earlier version)", ErrCannotCollect, s.stream)
	}
	info, err := s.st.Info(ctx, jetstream.WithSubjectFilter(s.prefix+"*"))
	if err != nil {
		return 0, fmt.Errorf("jsstore: listing orphan markers: %w", err)
	}
	n := 0
	for subj := range info.State.Subjects {
		key, err := kez.ParsePublicKey(strings.TrimPrefix(subj, s.prefix))
		if err != nil {
			continue // not a marker (no such messages are written)
		}
		m, err := s.last(ctx, subj)
		if err != nil {
			return n, err
		}
		if m == nil || !m.time.Before(cutoff) {
			continue
		}
		done, err := s.collect(ctx, key, m.seq)
		if err != nil {
			return n, err
		}
		if done {
			n++
		}
	}
	return n, nil
}

// collect deletes key's chain if it is still an orphan, or drops its
// stale marker (stream sequence marker and before) if it is not.
func (s *Store) collect(ctx context.Context, key kez.PublicKey, marker uint64) (bool, error) {
	h, seq, err := s.headAt(ctx, key)
	if errors.Is(err, sigchain.ErrNotFound) {
		if seq > 0 { // the fence of a collection that stopped midway
			devices, err := s.chainDevices(ctx, key)
			if err != nil {
				return false, err
			}
			if err := s.dropDevices(ctx, devices, seq+1); err != nil {
				return false, err
			}
			if err := s.purge(ctx, s.chainFilter(key), seq+1); err != nil {
				return false, err
			}
		}
		return seq > 0, s.purge(ctx, s.orphanSubject(key), marker+1)
	}
	if err != nil {
		return false, err
	}
	var devices []kez.PublicKey
	for since := uint64(0); since < h.Seqno; {
		raw, now, err := s.Links(ctx, key, since, sigchain.MaxLinksPerResponse)
		switch {
		case errors.Is(err, sigchain.ErrNotFound):
			return false, nil // collected meanwhile by another replica
		case err != nil:
			return false, err
		case now != h:
			return false, nil // appended meanwhile: look again next time
		case len(raw) == 0:
			return false, fmt.Errorf("jsstore: the chain of %s has no links after %d below its head %d", key, since, h.Seqno)
		}
		for _, b := range raw {
			l, err := sigchain.ParseLink(b)
			if err != nil {
				return false, fmt.Errorf("jsstore: link of %s is unreadable: %w", key, err)
			}
			if l.NamedHandle() != "" {
				return false, s.purge(ctx, s.orphanSubject(key), marker+1)
			}
			if d, _, ok := l.NamedDevice(); ok {
				devices = append(devices, d)
			}
		}
		since += uint64(len(raw))
	}
	ack, err := s.js.PublishMsg(ctx, &nats.Msg{Subject: s.prefix + key.String() + "." + fenceToken},
		jetstream.WithExpectStream(s.stream),
		jetstream.WithExpectLastSequenceForSubject(seq, s.chainFilter(key)))
	if isConflict(err) {
		return false, nil // appended meanwhile: look again next time
	}
	if err != nil {
		return false, fmt.Errorf("jsstore: fencing the orphan chain of %s: %w", key, err)
	}
	// The devices first: a collection that stops midway finds them again
	// in the fenced chain.
	if err := s.dropDevices(ctx, devices, ack.Sequence+1); err != nil {
		return false, err
	}
	if err := s.purge(ctx, s.chainFilter(key), ack.Sequence+1); err != nil {
		return false, err
	}
	if err := s.purgePrekey(ctx, key); err != nil {
		return false, err
	}
	return true, s.purge(ctx, s.orphanSubject(key), ack.Sequence+1)
}

// purge removes the messages on filter with a stream sequence below
// before.
func (s *Store) purge(ctx context.Context, filter string, before uint64) error {
	if err := s.st.Purge(ctx, jetstream.WithPurgeSubject(filter), jetstream.WithPurgeSequence(before)); err != nil {
		return fmt.Errorf("jsstore: purging %s: %w", filter, err)
	}
	return nil
}
