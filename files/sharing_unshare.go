package files

import (
	"context"
	"errors"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/files/format"
)

// Unshare removes every entry named nameOrCID, or whose blob has that CID,
// from the manifest in the user's sigchain and from the share index, and
// returns what was removed (as the user sees it). A name or CID that is
// neither published nor in the index gives a *[NotSharedError]; a linked
// device gets [ErrNotPrimary].
func (s *Sharing) Unshare(ctx context.Context, nameOrCID string) ([]format.Entry, error) {
	if !s.work.Enter() {
		return nil, ErrClosed
	}
	defer s.work.Leave()
	if s.primary == nil {
		return nil, ErrNotPrimary
	}
	if s.sigc == nil {
		return nil, ErrNoSigServer
	}
	// A CID matches in any text form ParseCID accepts: compared as a CID.
	c, cerr := format.ParseCID(nameOrCID)
	isCID := func(x cid.Cid) bool { return cerr == nil && x.Equals(c) }
	match := func(e format.Entry) bool { return e.Name == nameOrCID || isCID(e.CID) }
	// This install's shares of the name: those to a group are not
	// visible in the manifest, so they are found by their CID.
	named, err := s.idx.rows(ctx, false, "name = ?", nameOrCID)
	if err != nil {
		return nil, err
	}
	var dropped []format.Entry
	errNothing := errors.New("nothing to unshare")
	err = s.publish(ctx, func(m *format.Manifest, visible []format.Entry) error {
		dropped = dropEntries(m, visible, match)
		dropped = append(dropped, dropGroupEntries(m, named, func(r *shareRow) bool { return r.Name == nameOrCID })...)
		// A private entry this user cannot open (shared from elsewhere
		// without themselves): by CID only.
		for i := 0; i < len(m.Sealed); i++ {
			if se := m.Sealed[i]; isCID(se.CID) {
				dropped = append(dropped, format.Entry{CID: se.CID, BlobSize: se.BlobSize, Private: true})
				m.Sealed = append(m.Sealed[:i], m.Sealed[i+1:]...)
				i--
			}
		}
		if len(dropped) == 0 {
			return errNothing
		}
		return nil
	})
	if err != nil && !errors.Is(err, errNothing) {
		return nil, err
	}
	cidText := nameOrCID
	if cerr == nil {
		cidText = c.String() // the index keeps the canonical form
	}
	rows, rerr := s.idx.rows(ctx, false, "name = ? OR cid = ?", nameOrCID, cidText)
	if rerr != nil {
		return dropped, rerr
	}
	if len(dropped) == 0 && len(rows) == 0 {
		return nil, &NotSharedError{What: nameOrCID}
	}
	for _, r := range rows {
		if err := s.idx.deleteIDs(ctx, r.id); err != nil {
			return dropped, err
		}
		if len(dropped) == 0 { // only in the index (a share whose publishing failed)
			dropped = append(dropped, format.Entry{Name: r.Name, Size: r.Size, CID: r.CID, MediaType: r.MediaType, Private: r.Private})
		}
	}
	s.forget(ctx, dropped, 0)
	return dropped, nil
}

// forget removes from the index the rows of entries that left the manifest
// (except row keep).
func (s *Sharing) forget(ctx context.Context, gone []format.Entry, keep int64) {
	for _, e := range gone {
		rows, err := s.idx.rows(ctx, false, "cid = ?", e.CID.String())
		if err != nil {
			s.log.Warn("files: cleaning the share index", "err", err)
			return
		}
		for _, r := range rows {
			if r.id != keep && (e.Name == "" || r.Name == e.Name) {
				s.idx.deleteIDs(ctx, r.id)
			}
		}
	}
}

// dropEntries removes from m the public entries and the private entries
// (as visible lists them) that match, and returns them.
func dropEntries(m *format.Manifest, visible []format.Entry, match func(format.Entry) bool) []format.Entry {
	var out []format.Entry
	pub := m.Public[:0]
	for _, e := range m.Public {
		if match(e) {
			out = append(out, e)
			continue
		}
		pub = append(pub, e)
	}
	m.Public = pub
	for _, e := range visible {
		if e.Private && match(e) {
			out = append(out, e)
			m.Remove(e.CID) // a private CID is unique to its entry (fresh key)
		}
	}
	return out
}

// dropGroupEntries removes from m the entries shared with a group whose
// blob is that of one of rows that match, and returns them as the rows
// describe them.
func dropGroupEntries(m *format.Manifest, rows []*shareRow, match func(*shareRow) bool) []format.Entry {
	var out []format.Entry
	for _, r := range rows {
		if !match(r) {
			continue
		}
		if se, ok := m.GroupEntry(r.CID); ok {
			m.Remove(se.CID)
			out = append(out, format.Entry{Name: r.Name, Size: r.Size, CID: r.CID, MediaType: r.MediaType, Private: true, BlobSize: se.BlobSize, Device: se.Device})
		}
	}
	return out
}
