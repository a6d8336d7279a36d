package files

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"os"
	"path/filepath"

	"github.com/kez-lat/kez-chat/files/format"
	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// ShareOption adjusts one [Sharing.Share].
type ShareOption func(*shareConfig)

type shareConfig struct {
	name, mediaType string
	to              []shareTo
	group           *Group
}

// shareTo is one recipient handle, with the key it must name (zero: any).
type shareTo struct {
	handle string
	key    kez.PublicKey
}

// To makes the share private to the people with these handles (bare names
// take the home domain): the file is encrypted to them and its entry is
// readable only by them. You are added as a recipient too, so your other
// devices see the entry. Without To (or with no handles) the share is
// public. Several To options add up.
func To(handles ...string) ShareOption {
	return func(c *shareConfig) {
		for _, h := range handles {
			c.to = append(c.to, shareTo{handle: h})
		}
	}
}

// ToKey is [To] for a handle whose key the caller pinned (a chat
// contact's): the file is encrypted to the person only if the handle,
// resolved now, names key; otherwise Share fails with a
// *[RecipientKeyError] and shares nothing. It adds up with To.
func ToKey(handle string, key kez.PublicKey) ShareOption {
	return func(c *shareConfig) { c.to = append(c.to, shareTo{handle: handle, key: key}) }
}

// ErrRecipientKey reports a recipient given with [ToKey] whose handle
// names another key now.
var ErrRecipientKey = errors.New("files: the recipient's handle names another key than the one given")

// RecipientKeyError is returned by [Sharing.Share] when a handle given with
// [ToKey] names another key now: nothing was shared. It matches
// [ErrRecipientKey].
type RecipientKeyError struct {
	Handle  string        // canonical
	Want    kez.PublicKey // the key given
	Current kez.PublicKey // the key the handle names now
}

// Error names both keys.
func (e *RecipientKeyError) Error() string {
	return fmt.Sprintf("files: recipient %s now names %s, not %s: nothing was shared", e.Handle, e.Current, e.Want)
}

// Is matches [ErrRecipientKey].
func (e *RecipientKeyError) Is(target error) bool { return target == ErrRecipientKey }

// Named shares the file under name instead of its base name ("" keeps the
// base name).
func Named(name string) ShareOption {
	return func(c *shareConfig) { c.name = name }
}

// MediaType sets the entry's media type, e.g. "application/pdf", instead
// of guessing it from the name's extension, else from the first bytes.
func MediaType(mediaType string) ShareOption {
	return func(c *shareConfig) { c.mediaType = mediaType }
}

// Share shares the file at path: it hashes it (public) or hashes its
// encryption under a fresh file key (private, with [To]; the recipients' X25519
// keys come from their verified sigchains), records it in the share index,
// and appends a set_shared_files link with the new manifest to the user's
// sigchain. A file already shared under the same name is replaced. Public
// files are not copied; private ones are encrypted on the fly when served.
// The entry names this install's device as the one that serves it (see
// [Sharing.DeviceKey]), so it is fetched from here.
//
// Errors: [ErrNotPrimary] on a linked device, an unreadable path or a name
// the manifest refuses (wrapping [format.ErrManifest]), a recipient that
// does not resolve (handles errors), a *[RecipientKeyError] ([ToKey]), a manifest over its limits, or the
// sig-server's; with [ToGroup] also [ErrNotGroupMember] and the group
// package's errors (its chain failing to verify, group.ErrFork,
// group.ErrRollback against Group.Pin).
//
// With [ToGroup] the entry names the group and holds no key: send
// SharedFile.Offer to the group (chat.Client.SendGroupFile) once Share
// returned, so that its members can fetch the file.
func (s *Sharing) Share(ctx context.Context, path string, opts ...ShareOption) (*SharedFile, error) {
	if !s.work.Enter() {
		return nil, ErrClosed
	}
	defer s.work.Leave()
	var o shareConfig
	for _, opt := range opts {
		opt(&o)
	}
	if s.primary == nil {
		return nil, ErrNotPrimary
	}
	if s.sigc == nil {
		return nil, ErrNoSigServer
	}
	if o.group != nil && len(o.to) > 0 {
		return nil, ErrGroupAndHandles
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("files: %s: %w", path, err)
	}
	f, err := os.Open(abs)
	if err != nil {
		return nil, fmt.Errorf("files: cannot read %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("files: cannot read %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("files: %s is not a regular file; share files one at a time", path)
	}
	name := cmp.Or(o.name, filepath.Base(abs))
	if err := format.CheckName(name); err != nil {
		return nil, err
	}
	mediaType, err := guessMediaType(f, name, o.mediaType)
	if err != nil {
		return nil, err
	}
	if st.Size() > format.MaxBlobSize {
		return nil, fmt.Errorf("files: %s is larger than the %d bytes a blob may have", path, int64(format.MaxBlobSize))
	}

	own, err := s.ownChain(ctx)
	if err != nil {
		return nil, err
	}
	var gref *groupRef
	if o.group != nil {
		if _, gref, err = s.groupTarget(ctx, *o.group); err != nil {
			return nil, err
		}
	}
	private := len(o.to) > 0 || gref != nil
	row := &shareRow{Name: name, Path: abs, Size: st.Size(), MTimeNs: st.ModTime().UnixNano(), MediaType: mediaType,
		Private: private, SharedAt: s.now(), Group: gref}
	switch {
	case gref != nil:
		// Nothing is wrapped: the members get the key in the group. The
		// sharer is the recipient the index records (their devices).
		row.Recipients = []format.Recipient{{Key: s.me}}
		row.Handles = []string{cmp.Or(own.Handle(), s.me.String())}
	case private:
		if own, err = s.rotateIfDue(ctx, own); err != nil {
			return nil, err
		}
		if row.Recipients, row.Handles, err = s.recipients(ctx, own, o.to); err != nil {
			return nil, err
		}
	}
	if row.Private {
		if row.Key, err = format.NewFileKey(); err != nil {
			return nil, err
		}
	}
	// This install's shares of the name: a share to a group is not
	// visible in the manifest, so it is replaced by its CID.
	sameName, err := s.idx.rows(ctx, false, "name = ?", name)
	if err != nil {
		return nil, err
	}
	tree, err := hashShare(f, row.Size, row.Private, row.Key)
	if err != nil {
		return nil, fmt.Errorf("files: hashing %s: %w", path, err)
	}
	if st2, err := os.Stat(abs); err != nil || st2.Size() != st.Size() || !st2.ModTime().Equal(st.ModTime()) {
		return nil, fmt.Errorf("files: %s changed while it was being hashed; share it again once it is written", path)
	}
	row.CID = tree.CID()
	id, err := s.idx.insert(ctx, row, tree)
	if err != nil {
		return nil, err
	}
	entry := format.Entry{Name: name, Size: row.Size, CID: row.CID, MediaType: mediaType, ModTime: st.ModTime(), Key: row.Key}
	if s.devKey != s.me {
		entry.Device = s.devKey
	}
	var replaced []format.Entry
	err = s.publish(ctx, func(m *format.Manifest, visible []format.Entry) error {
		replaced = dropEntries(m, visible, func(e format.Entry) bool { return e.Name == name })
		replaced = append(replaced, dropGroupEntries(m, sameName, func(r *shareRow) bool { return true })...)
		switch {
		case gref != nil:
			return m.AddGroup(entry, gref.id)
		case row.Private:
			return m.AddPrivate(entry, row.Recipients)
		}
		return m.AddPublic(entry)
	})
	if err != nil {
		s.idx.deleteIDs(context.WithoutCancel(ctx), id)
		return nil, err
	}
	s.forget(ctx, replaced, id)
	row.ownerKey = s.me
	sf := row.shared()
	return &sf, nil
}

// ownChain fetches and verifies the user's own sigchain (checked against
// the pin by Config.OwnChain, if set).
func (s *Sharing) ownChain(ctx context.Context) (*sigchain.State, error) {
	var st *sigchain.State
	var err error
	if s.cfg.OwnChain != nil {
		st, err = s.cfg.OwnChain(ctx)
	} else {
		st, err = s.sigc.FetchVerified(ctx, s.me, nil)
	}
	if errors.Is(err, sigchain.ErrNotFound) {
		return nil, fmt.Errorf("files: you have no sigchain at %s: %w", s.sigc.BaseURL, err)
	}
	if err != nil {
		return nil, fmt.Errorf("files: reading your sigchain: %w", err)
	}
	return st, nil
}

// maxPublishTries bounds the retries of an append that lost a race with
// another append to the same chain.
const maxPublishTries = 5

// publish reads the user's latest manifest, drops the entries of devices
// no longer current, lets edit change it, and appends it as a
// set_shared_files link, starting again from the new head if another
// append got there first.
func (s *Sharing) publish(ctx context.Context, edit func(m *format.Manifest, visible []format.Entry) error) error {
	for try := 1; ; try++ {
		st, err := s.ownChain(ctx)
		if err != nil {
			return err
		}
		m := &format.Manifest{}
		if body := st.SharedFiles(); body != nil {
			if m, err = format.DecodeManifest(body); err != nil {
				return fmt.Errorf("files: the shared-files list in your sigchain cannot be read by this version, so it is left alone: %w", err)
			}
		}
		if n := dropRevoked(m, st); n > 0 {
			s.log.Info("files: dropping the shared files of revoked devices from your list", "entries", n)
		}
		if err := edit(m, format.Visible(m, s.primary)); err != nil {
			return err
		}
		body, err := m.Encode()
		if err != nil {
			return fmt.Errorf("%w (unshare something first)", err)
		}
		link, err := sigchain.NewLink(s.primary, st, sigchain.TypeSetSharedFiles, body, s.now())
		if err != nil {
			return fmt.Errorf("files: making the set_shared_files link: %w", err)
		}
		err = s.sigc.Append(ctx, link)
		if errors.Is(err, sigchain.ErrConflict) && try < maxPublishTries {
			continue
		}
		if err != nil {
			return fmt.Errorf("files: publishing your shared files to the sig-server: %w", err)
		}
		return nil
	}
}

// rotateIfDue appends the rotation of the user's encryption key that a
// revocation left undone (the sig-server failed between the two links),
// so that the revoked device, which holds the current generation, cannot
// open the user's own wrap of a private share (docs/spec/sigchain.md,
// "Rotation on revocation"). The new generation reaches the user's other
// devices when their chat client next runs on an install holding the
// primary key. It returns the chain as it is then.
func (s *Sharing) rotateIfDue(ctx context.Context, st *sigchain.State) (*sigchain.State, error) {
	for try := 1; st.RotationDue(); try++ {
		gen := st.EncryptionGeneration() + 1
		body := sigchain.SetEncryptionKeyBody(s.primary.EncryptionKey(gen).PublicKey(), gen)
		link, err := sigchain.NewLink(s.primary, st, sigchain.TypeSetEncryptionKey, body, s.now())
		if err != nil {
			return nil, fmt.Errorf("files: making the set_encryption_key link: %w", err)
		}
		err = s.sigc.Append(ctx, link)
		if err != nil && !(errors.Is(err, sigchain.ErrConflict) && try < maxPublishTries) {
			return nil, fmt.Errorf("files: rotating your encryption key at the sig-server: %w", err)
		}
		if st, err = s.ownChain(ctx); err != nil {
			return nil, err
		}
	}
	return st, nil
}

// recipients resolves the handles of a private share to keys and X25519
// keys from their verified chains, and adds the user themselves.
func (s *Sharing) recipients(ctx context.Context, own *sigchain.State, to []shareTo) ([]format.Recipient, []string, error) {
	rs := []format.Recipient{{Key: s.me, X25519: own.EncryptionKey(), Generation: own.EncryptionGeneration()}}
	hs := []string{cmp.Or(own.Handle(), s.me.String())}
	for _, t := range to {
		h := t.handle
		// Not from the cache: a recipient who revoked a device rotated
		// their encryption key, and the revoked device must not open
		// what is shared from then on (docs/spec/chat.md §8.6).
		hh, err := s.resolverRules().Parse(h)
		if err != nil {
			return nil, nil, fmt.Errorf("files: recipient %s: %w", h, err)
		}
		res, err := s.resolver.ResolveFresh(ctx, hh, nil)
		if err != nil {
			return nil, nil, fmt.Errorf("files: recipient %s: %w", h, err)
		}
		if !t.key.IsZero() && res.Key != t.key {
			return nil, nil, &RecipientKeyError{Handle: res.Handle.String(), Want: t.key, Current: res.Key}
		}
		if res.State.RotationDue() {
			return nil, nil, &RotationError{Handle: res.Handle.String()}
		}
		dup := false
		for _, r := range rs {
			dup = dup || r.Key == res.Key
		}
		if dup {
			continue
		}
		rs = append(rs, format.Recipient{Key: res.Key, X25519: res.EncryptionKey, Generation: res.Generation})
		hs = append(hs, res.Handle.String())
	}
	if len(rs) > format.MaxRecipients {
		return nil, nil, fmt.Errorf("%w: a private file goes to at most %d recipients (you included), not %d", format.ErrManifest, format.MaxRecipients, len(rs))
	}
	return rs, hs, nil
}

// resolverRules are the handle rules of the resolver: its default domain
// completes bare names of recipients and groups.
func (s *Sharing) resolverRules() handles.Rules {
	return handles.Rules{DefaultDomain: s.resolver.DefaultDomain, AllowLocal: s.resolver.AllowLocal}
}

// guessMediaType returns given, else the type of name's extension, else
// the type sniffed from f's first bytes.
func guessMediaType(f *os.File, name, given string) (string, error) {
	if given != "" {
		if err := format.CheckMediaType(given); err != nil {
			return "", err
		}
		return given, nil
	}
	if t := mime.TypeByExtension(filepath.Ext(name)); t != "" && format.CheckMediaType(t) == nil {
		return t, nil
	}
	buf := make([]byte, 512)
	n, _ := f.ReadAt(buf, 0)
	if n == 0 {
		return "", nil
	}
	return http.DetectContentType(buf[:n]), nil
}
