package chat

// Files shared with a group (docs/spec/manifest.md §7, docs/spec/chat.md
// §10.2): the sharer's manifest names the group and holds no key; the key
// travels to the members as a group message of kind group-file, sealed
// with the sender key of the group's epoch like any group message, so
// only that epoch's members read it.

import (
	"context"
	"fmt"

	"github.com/kez-lat/kez-chat/files/format"
	"github.com/kez-lat/kez-chat/group"
	"github.com/kez-lat/kez-chat/kez"
)

// KindGroupFile is a group message offering a file shared with the group:
// its body is a file offer (format.GroupFile: the owner, the encrypted
// blob's CID, the file key, name, size, media type and time). It is kept
// in the group's history; [Entry.GroupFile] reads it.
const KindGroupFile Kind = "group-file"

// ErrForgedOffer reports a group-file message whose offer names another
// group than the one it was sent in, or another owner than its sender:
// it is refused. It matches ErrMalformed.
var ErrForgedOffer = fmt.Errorf("%w: a group file offer names another group or owner than its message", ErrMalformed)

// checkGroupKind applies the rules of the inner message of a group
// envelope of the group gid from person: kind text, or group-file with an
// offer of person's for that group.
func checkGroupKind(m *Message, gid [32]byte, person kez.PublicKey) error {
	switch m.Kind {
	case KindText:
		return nil
	case KindGroupFile:
		f, err := format.ParseGroupFile(m.Body)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		if f.Group != gid {
			return fmt.Errorf("%w: an offer for another group, from %s", ErrForgedOffer, person)
		}
		if f.Owner != person {
			return fmt.Errorf("%w: an offer of %s's file from %s", ErrForgedOffer, f.Owner, person)
		}
		return nil
	}
	return fmt.Errorf("%w: a group message of kind %q", ErrMalformed, m.Kind)
}

// GroupFile reads the offer of a group-file message (Kind
// [KindGroupFile]); its Key decrypts the file. Other kinds, and bodies
// that are no offer, give an error wrapping ErrMalformed.
func (e *Entry) GroupFile() (*format.GroupFile, error) {
	if e.Kind != KindGroupFile {
		return nil, fmt.Errorf("%w: a %q message is no file offer", ErrMalformed, e.Kind)
	}
	f, err := format.ParseGroupFile(e.Body)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return f, nil
}

// GroupFile is a file offered in a group: the offer (the file key
// included), the message it came in, and the handle to fetch it from.
type GroupFile struct {
	Offer format.GroupFile
	// Message is the group-file message: its ID, sender (From, the
	// owner), time, and whether it is the user's own (not Incoming).
	Message *Entry
	// OwnerHandle is the owner's handle as the group names them (or as
	// checked for the message): pass it to files.Sharing.Fetch with
	// files.WithFileKey, which checks that it names Offer.Owner. "" if
	// none is known.
	OwnerHandle string
}

// SendGroupFile offers the members of the group (NAME or NAME@domain) a
// file shared with it: f is the offer files.Sharing.Share returned for a
// share to the group (SharedFile.Offer). It is sent like a message
// ([Client.SendGroup]): sealed with this device's sender key of the
// group's current epoch, so the members of that epoch, and only they,
// read it. f.Owner must be the user (zero: filled in), f.Group the
// group's ID (zero: filled in). Errors: those of SendGroup, and
// format.ErrGroupFile for an offer that breaks a rule.
func (c *Client) SendGroupFile(ctx context.Context, name string, f format.GroupFile) (Sent, error) {
	gs, err := c.pinnedGroup(name)
	if err != nil {
		return Sent{}, err
	}
	switch {
	case f.Owner.IsZero():
		f.Owner = c.me
	case f.Owner != c.me:
		return Sent{}, fmt.Errorf("%w: an offer of %s's file: only its owner offers it", format.ErrGroupFile, f.Owner)
	}
	switch {
	case f.Group == [32]byte{}:
		f.Group = gs.gid
	case f.Group != gs.gid:
		return Sent{}, fmt.Errorf("%w: an offer of a file shared with another group than %s", format.ErrGroupFile, gs.name)
	}
	body, err := f.MarshalBinary()
	if err != nil {
		return Sent{}, err
	}
	return c.sendGroup(ctx, gs.name, KindGroupFile, body)
}

// GroupFiles returns the files offered in the group (NAME or NAME@domain),
// the user's own offers included, oldest first; not those of a sender
// whose messages are held (a contact whose key or chain changed, until
// the change is accepted), nor those of a group the user has not
// accepted (requests, docs/spec/chat.md §10.9). A later offer of the same name does not hide
// an earlier one: the owner's manifest says which is still shared.
func (c *Client) GroupFiles(ctx context.Context, name string) ([]GroupFile, error) {
	n, err := c.groupName(name)
	if err != nil {
		return nil, err
	}
	es, err := queryEntries(ctx, c.db.db, `SELECT `+entryColumns+` FROM messages WHERE grp = ? AND kind = ?`+orderBy, n, string(KindGroupFile))
	if err != nil {
		return nil, err
	}
	var st *group.State
	if gs := c.groups.get(n); gs != nil {
		st, _, _ = gs.snapshot()
	}
	handles := c.handlesOf(st)
	out := make([]GroupFile, 0, len(es))
	for _, e := range es {
		if e.Trust == TrustHeld || e.Trust == TrustRequest {
			continue
		}
		f, err := e.GroupFile()
		if err != nil {
			c.log.Warn("a stored group file offer does not parse", "group", n, "id", e.ID, "err", err)
			continue
		}
		h := handles[f.Owner]
		if h == "" && e.Incoming {
			h = e.PeerHandle
		}
		out = append(out, GroupFile{Offer: *f, Message: e, OwnerHandle: h})
	}
	return out, nil
}
