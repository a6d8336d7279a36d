package jsstore

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// devicesToken is the subject token of the device index:
// <prefix>.devices.<device> holds the device's entry. A key is never
// "devices", so no chain's filter <prefix>.<key>.> takes it.
const devicesToken = "devices"

func (s *Store) deviceSubject(d kez.PublicKey) string {
	return s.prefix + devicesToken + "." + d.String()
}

// deviceEntry is the body of a device index message.
type deviceEntry struct {
	Person  string `json:"person"`
	Revoked bool   `json:"revoked"`
}

// deviceAt reads device's entry and its stream sequence (0 when there is
// none) from the stream leader.
func (s *Store) deviceAt(ctx context.Context, device kez.PublicKey) (sigchain.DeviceEntry, uint64, error) {
	m, err := s.last(ctx, s.deviceSubject(device))
	if err != nil || m == nil {
		return sigchain.DeviceEntry{}, 0, err
	}
	var e deviceEntry
	if err := json.Unmarshal(m.data, &e); err != nil {
		return sigchain.DeviceEntry{}, 0, fmt.Errorf("jsstore: the index entry of %s is unreadable: %w", device, err)
	}
	p, err := kez.ParsePublicKey(e.Person)
	if err != nil {
		return sigchain.DeviceEntry{}, 0, fmt.Errorf("jsstore: the index entry of %s: %w", device, err)
	}
	return sigchain.DeviceEntry{Person: p, Revoked: e.Revoked}, m.seq, nil
}

// Device implements [sigchain.DeviceStore]: the last message on
// <prefix>.devices.<device>, read from the stream leader.
func (s *Store) Device(ctx context.Context, device kez.PublicKey) (sigchain.DeviceEntry, error) {
	e, seq, err := s.deviceAt(ctx, device)
	if err != nil {
		return sigchain.DeviceEntry{}, err
	}
	if seq == 0 {
		return sigchain.DeviceEntry{}, sigchain.ErrNoDevice
	}
	return e, nil
}

// appendDevice stores link, an add_device or revoke_device link that
// follows the chain's head at stream sequence seq, together with the
// device's index entry in one atomic batch: the link on condition that
// the chain did not move, the entry on condition that the device's
// entry is still the one read (none, for an add).
func (s *Store) appendDevice(ctx context.Context, link *sigchain.Link, seq uint64, device kez.PublicKey, revoke bool) error {
	key := link.Key()
	e, dseq, err := s.deviceAt(ctx, device)
	if err != nil {
		return err
	}
	if !revoke && dseq != 0 {
		return fmt.Errorf("jsstore: adding %s: %w", device, sigchain.ErrDeviceKnown)
	}
	if revoke && dseq != 0 && e.Person != key {
		return fmt.Errorf("jsstore: the device %s is indexed for %s, not %s", device, e.Person, key)
	}
	entry, _ := json.Marshal(deviceEntry{Person: key.String(), Revoked: revoke})
	lm := &nats.Msg{Subject: s.linkSubject(key, link.Seqno()), Data: link.Bytes(), Header: nats.Header{}}
	lm.Header.Set(jetstream.ExpectedStreamHeader, s.stream)
	lm.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(seq, 10))
	lm.Header.Set(jetstream.ExpectedLastSubjSeqSubjHeader, s.chainFilter(key))
	dm := &nats.Msg{Subject: s.deviceSubject(device), Data: entry, Header: nats.Header{}}
	dm.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(dseq, 10))
	msgs := []*nats.Msg{lm, dm}
	if !revoke {
		// The entry once more, on condition that the device has no chain
		// (a batch message checks one subject): a key never is both a
		// person and a device, also when its eldest link races the add.
		om := &nats.Msg{Subject: s.deviceSubject(device), Data: entry, Header: nats.Header{}}
		om.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
		om.Header.Set(jetstream.ExpectedLastSubjSeqSubjHeader, s.chainFilter(device))
		msgs = append(msgs, om)
	}
	err = s.publishBatch(ctx, msgs...)
	if isConflict(err) {
		h, hseq, herr := s.headAt(ctx, key)
		switch {
		case errors.Is(herr, sigchain.ErrNotFound):
			return &sigchain.ConflictError{} // collected meanwhile
		case herr != nil:
			return fmt.Errorf("jsstore: the append was refused, and reading the head failed: %w", herr)
		case hseq != seq:
			return &sigchain.ConflictError{Head: h}
		}
		// The chain did not move: the device's entry did, or (an add)
		// the device has a chain.
		if !revoke {
			return fmt.Errorf("jsstore: adding %s: %w", device, sigchain.ErrDeviceKnown)
		}
		return fmt.Errorf("jsstore: revoking %s: its index entry moved meanwhile", device)
	}
	if err != nil {
		return fmt.Errorf("jsstore: storing link %d of %s: %w", link.Seqno(), key, err)
	}
	if revoke {
		return s.purgePrekey(ctx, device)
	}
	return nil
}

// appendEldest stores link, an eldest link of a chain whose subjects are
// empty up to stream sequence seq (0, or a collection's fence), and the
// chain's orphan marker in one atomic batch: the link on condition that
// the chain's subjects did not move, the marker on condition that the
// key is not in the device index (a device key never starts a chain of
// its own, also when an add_device link naming it races this append).
// A chain that names a handle gets the marker too; the next collection
// finds the handle and drops it.
func (s *Store) appendEldest(ctx context.Context, link *sigchain.Link, seq uint64) error {
	key := link.Key()
	mm := &nats.Msg{Subject: s.orphanSubject(key), Header: nats.Header{}}
	mm.Header.Set(jetstream.ExpectedStreamHeader, s.stream)
	mm.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
	mm.Header.Set(jetstream.ExpectedLastSubjSeqSubjHeader, s.deviceSubject(key))
	lm := &nats.Msg{Subject: s.linkSubject(key, 1), Data: link.Bytes(), Header: nats.Header{}}
	lm.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(seq, 10))
	lm.Header.Set(jetstream.ExpectedLastSubjSeqSubjHeader, s.chainFilter(key))
	err := s.publishBatch(ctx, mm, lm)
	if isConflict(err) {
		h, _, herr := s.headAt(ctx, key)
		switch {
		case herr == nil:
			return &sigchain.ConflictError{Head: h} // another eldest link won
		case !errors.Is(herr, sigchain.ErrNotFound):
			return fmt.Errorf("jsstore: the append was refused, and reading the head failed: %w", herr)
		}
		if _, dseq, derr := s.deviceAt(ctx, key); derr != nil {
			return fmt.Errorf("jsstore: the append was refused, and reading the device index failed: %w", derr)
		} else if dseq != 0 {
			return fmt.Errorf("jsstore: a chain of %s: %w", key, sigchain.ErrDeviceKnown)
		}
		return &sigchain.ConflictError{} // a racing append was in flight: try again
	}
	if err != nil {
		return fmt.Errorf("jsstore: storing link 1 of %s: %w", key, err)
	}
	return nil
}

// publishBatch publishes msgs as one JetStream atomic batch (all or
// none stored) and returns the error of its commit: a *jetstream.APIError
// when the stream refused it.
func (s *Store) publishBatch(ctx context.Context, msgs ...*nats.Msg) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.timeout)
		defer cancel()
	}
	id := rand.Text()
	for i, m := range msgs {
		m.Header.Set("Nats-Batch-Id", id)
		m.Header.Set("Nats-Batch-Sequence", strconv.Itoa(i+1))
		if i < len(msgs)-1 {
			if err := s.nc.PublishMsg(m); err != nil {
				return err
			}
			continue
		}
		m.Header.Set("Nats-Batch-Commit", "1")
		resp, err := s.nc.RequestMsgWithContext(ctx, m)
		if err != nil {
			return err
		}
		var ack struct {
			Error *jetstream.APIError `json:"error"`
			Seq   uint64              `json:"seq"`
		}
		if err := json.Unmarshal(resp.Data, &ack); err != nil {
			return fmt.Errorf("the batch's acknowledgement is unreadable: %w", err)
		}
		if ack.Error != nil {
			return ack.Error
		}
		if ack.Seq == 0 {
			return errors.New("the batch's acknowledgement has no sequence")
		}
	}
	return nil
}

// prekeyOwner returns nil if key may hold a prekey record: it is a
// current device in the index or has a chain. A revoked device gets
// [sigchain.ErrDeviceRevoked], another key [sigchain.ErrNotFound].
func (s *Store) prekeyOwner(ctx context.Context, key kez.PublicKey) error {
	e, seq, err := s.deviceAt(ctx, key)
	switch {
	case err != nil:
		return err
	case seq != 0 && e.Revoked:
		return sigchain.ErrDeviceRevoked
	case seq != 0:
		return nil
	}
	_, _, err = s.headAt(ctx, key)
	return err
}

// chainDevices returns the devices the links of key's chain name, reading
// links 1, 2, … from the stream leader until one is missing: the chain
// of a collection's fence, which readers no longer see.
func (s *Store) chainDevices(ctx context.Context, key kez.PublicKey) ([]kez.PublicKey, error) {
	var out []kez.PublicKey
	for seqno := uint64(1); ; seqno++ {
		m, err := s.last(ctx, s.linkSubject(key, seqno))
		if err != nil || m == nil {
			return out, err
		}
		l, err := sigchain.ParseLink(m.data)
		if err != nil {
			return nil, fmt.Errorf("jsstore: link %d of %s is unreadable: %w", seqno, key, err)
		}
		if d, _, ok := l.NamedDevice(); ok {
			out = append(out, d)
		}
	}
}

// dropDevices removes the index entries of devices (up to stream
// sequence before) and their prekey records: the devices of a collected
// chain.
func (s *Store) dropDevices(ctx context.Context, devices []kez.PublicKey, before uint64) error {
	for _, d := range devices {
		if err := s.purge(ctx, s.deviceSubject(d), before); err != nil {
			return err
		}
		if err := s.purgePrekey(ctx, d); err != nil {
			return err
		}
	}
	return nil
}

// linkRequestAge is how long the link request bucket keeps a request:
// the longest a request is valid, plus how far ahead its creation may be.
const linkRequestAge = sigchain.LinkRequestTTL + sigchain.LinkRequestSkew

// PutLinkRequest implements [sigchain.LinkRequestStore]: a KV create of
// the code's text in the link request bucket. The count of pending
// requests is the bucket's (JetStream drops each request
// [sigchain.LinkRequestTTL] + [sigchain.LinkRequestSkew] after it was
// stored); it is read before the create, so concurrent requests may pass
// the cap by a few.
func (s *Store) PutLinkRequest(ctx context.Context, req *sigchain.LinkRequest, _ time.Time, max int) (bool, error) {
	if max >= 0 {
		st, err := s.linkRequests.Status(ctx)
		if err != nil {
			return false, fmt.Errorf("jsstore: counting link requests: %w", err)
		}
		if st.Values() >= uint64(max) {
			if _, err := s.LinkRequest(ctx, req.Code()); err == nil {
				return false, nil
			}
			return false, sigchain.ErrLinkRequestsFull
		}
	}
	_, err := s.linkRequests.Create(ctx, req.Code().String(), req.Bytes())
	if errors.Is(err, jetstream.ErrKeyExists) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("jsstore: storing a link request: %w", err)
	}
	return true, nil
}

// LinkRequest implements [sigchain.LinkRequestStore], reading from the
// bucket's stream leader.
func (s *Store) LinkRequest(ctx context.Context, code sigchain.LinkCode) ([]byte, error) {
	m, err := s.linkLeader.Last(ctx, s.linkRequestSubject+code.String())
	if err != nil {
		return nil, fmt.Errorf("jsstore: reading a link request: %w", err)
	}
	if m == nil {
		return nil, sigchain.ErrNoLinkRequest
	}
	if removed, err := m.KVRemoved(); err != nil || removed {
		return nil, sigchain.ErrNoLinkRequest
	}
	return m.Data, nil
}

// SweepLinkRequests implements [sigchain.LinkRequestStore]: JetStream
// drops expired requests by itself (the bucket's age limit), so there is
// nothing to sweep.
func (s *Store) SweepLinkRequests(context.Context, time.Time) (int, error) { return 0, nil }
