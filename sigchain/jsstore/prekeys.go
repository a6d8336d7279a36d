package jsstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/session"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/nats-io/nats.go/jetstream"
)

// prekeyTries bounds PutPrekey's compare-and-set rounds against other
// writers of the same key.
const prekeyTries = 8

// prekeyAt reads key's record and its revision from the bucket's stream
// leader; rev is that of a delete marker (or 0) when there is no record.
func (s *Store) prekeyAt(ctx context.Context, key kez.PublicKey) (rec []byte, rev uint64, err error) {
	m, err := s.prekeyLeader.Last(ctx, s.prekeySubject+key.String())
	if err != nil {
		return nil, 0, fmt.Errorf("jsstore: reading the prekey of %s: %w", key, err)
	}
	if m == nil {
		return nil, 0, nil
	}
	removed, err := m.KVRemoved()
	if err != nil {
		return nil, 0, fmt.Errorf("jsstore: %w", err)
	}
	if removed {
		return nil, m.Seq, nil
	}
	return m.Data, m.Seq, nil
}

// Prekey implements [sigchain.PrekeyStore]: the value of <key> in the
// prekey bucket, read from its stream leader.
func (s *Store) Prekey(ctx context.Context, key kez.PublicKey) ([]byte, error) {
	rec, _, err := s.prekeyAt(ctx, key)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, sigchain.ErrNoPrekey
	}
	return rec, nil
}

// PutPrekey implements [sigchain.PrekeyStore]. It reads the stored
// record, compares the creation times and writes on condition that the
// key's revision is still the one read (a KV update), so of concurrent
// writers the newest record wins. The chain (or the device's index
// entry) is checked before, not atomically with the write: a record
// written while its orphan chain is collected outlives the chain, and
// the sig-server does not serve it; a record written while its device is
// revoked is purged once the write sees the revocation.
func (s *Store) PutPrekey(ctx context.Context, p *session.Prekey) error {
	rec, err := p.MarshalBinary()
	if err != nil {
		return fmt.Errorf("jsstore: %w", err)
	}
	if err := s.prekeyOwner(ctx, p.Owner); err != nil {
		return err // sigchain.ErrNotFound, ErrDeviceRevoked, or a read error
	}
	for range prekeyTries {
		stored, rev, err := s.prekeyAt(ctx, p.Owner)
		if err != nil {
			return err
		}
		if stored != nil {
			old, err := session.ParsePrekey(stored)
			if err != nil {
				return fmt.Errorf("jsstore: the stored prekey of %s is unreadable: %w", p.Owner, err)
			}
			if !p.Created.After(old.Created) {
				return sigchain.ErrStalePrekey
			}
		}
		_, err = s.prekeys.Update(ctx, p.Owner.String(), rec, rev)
		if err == nil {
			// A revocation that raced the write purged before it; purge
			// after it too.
			if e, err := s.Device(ctx, p.Owner); err == nil && e.Revoked {
				if err := s.purgePrekey(ctx, p.Owner); err != nil {
					return err
				}
				return sigchain.ErrDeviceRevoked
			}
			return nil
		}
		if !isKVConflict(err) {
			return fmt.Errorf("jsstore: storing the prekey of %s: %w", p.Owner, err)
		}
	}
	return fmt.Errorf("jsstore: storing the prekey of %s: %d other writers won in a row", p.Owner, prekeyTries)
}

// purgePrekey removes key's record, with its chain. A key without one
// is left alone, so that collected chains leave no purge markers.
func (s *Store) purgePrekey(ctx context.Context, key kez.PublicKey) error {
	rec, _, err := s.prekeyAt(ctx, key)
	if err != nil || rec == nil {
		return err
	}
	if err := s.prekeys.Purge(ctx, key.String()); err != nil {
		return fmt.Errorf("jsstore: purging the prekey of %s: %w", key, err)
	}
	return nil
}

// isKVConflict reports a KV update that lost a compare-and-set.
func isKVConflict(err error) bool {
	return isConflict(err) || errors.Is(err, jetstream.ErrKeyExists)
}
