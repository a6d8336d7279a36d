package files

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/files/format"
	"github.com/kez-lat/kez-chat/files/internal/signal"
	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/internal/lifecycle"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/libp2p/go-libp2p"
	"github.com/nats-io/nats.go"
)

// Config configures [Open]. Client says who the user is, where their
// state lives and which servers they use (see package client); its
// Identity (or, on a linked device, Device and Person) and Home are
// required. What else is needed depends on what the caller does:
//
//   - Share and Unshare need the primary key (Client.Identity; a linked
//     device gets [ErrNotPrimary]) and the sig-server (the user's own
//     chain), and Share to named people needs handle resolution (a home
//     server, or full handles);
//   - Browse needs handle resolution;
//   - Fetch and Serve also need NATS (NATS, or Client.NATSURL) and open a
//     libp2p node on ListenAddrs; while serving, the node keeps a
//     reservation with each relay of Client.Relays ([ParseRelays],
//     [NodeConfig.Relays]), so that fetchers behind NAT reach it.
type Config struct {
	// Client is the configuration the client parts share: identity (the
	// device key, [client.Config.DeviceIdentity], is the node's libp2p
	// PeerID and the signalling key; the primary key signs the manifest),
	// state folder (the share index shares.db lives in Client.Home), home
	// chat-server, broker, resolver, HTTP client, logger and clock. Open
	// completes it with [client.Config.Discover].
	Client client.Config

	// Keys are the person's encryption keys on a linked device, which
	// holds no primary key: a chat.Client (or chat.ReadKeyring's
	// Keyring) gives those the person's other devices sent it
	// (docs/spec/chat.md §8.6), with which private entries shared with
	// the person open. Ignored when Client.Identity is set (its words
	// derive every generation); nil on a linked device: only public
	// entries show.
	Keys format.Keys

	// OwnChain, if set, returns the user's own chain checked against the
	// one this install pinned (chat.FetchOwnChain does, from the chat
	// database in Client.Home): a sig-server that serves an older or a
	// different history of it is then not believed, and nothing is
	// appended after what it served. nil: the chain is fetched from the
	// sig-server and verified as it stands.
	OwnChain func(ctx context.Context) (*sigchain.State, error)

	// NATS is a connection logged in as the device key (e.g.
	// chat.Client.Conn()), used for signalling instead of logging in to
	// Client.NATSURL. Close does not close it.
	NATS *nats.Conn

	// ListenAddrs are the libp2p listen addresses; empty means TCP and QUIC
	// on every interface, on ports the system picks.
	ListenAddrs []string
	// Libp2pOptions are passed to the node (see
	// [NodeConfig.Libp2pOptions]).
	Libp2pOptions []libp2p.Option
	// MaxUploadRate caps the bytes per second the node sends of the files
	// it serves (see [NodeConfig.MaxUploadRate]); 0 means unlimited.
	MaxUploadRate int64

	// LocateTimeout bounds the wait for the owner's answer to one locate
	// request; 0 means 3 s. MaxWaitInterval caps the pause between
	// requests of a waiting fetch; 0 means 5 s.
	LocateTimeout   time.Duration
	MaxWaitInterval time.Duration

	// Reshare makes Serve also serve, to anyone, the public files this
	// install fetched (every completed fetch of a public entry is recorded
	// in the share index), while they are unchanged on disk, and tell each
	// owner's device so every 10 minutes, so that other fetchers pull from
	// here too (docs/spec/signalling.md §6). Private files are never
	// re-served.
	Reshare bool
	// Holders bounds what Serve keeps of the haves re-sharers send about
	// this install's public files; the zero value means the defaults.
	Holders HolderLimits
	// HoldersTimeout bounds a fetch's wait for the owner's list of
	// holders of a public file; 0 means 1 s.
	HoldersTimeout time.Duration
	// Answers bounds the locate and holders requests Serve answers
	// (signed) per second before it asks for a cookie round trip
	// (docs/spec/signalling.md §7); the zero value means the defaults.
	Answers AnswerLimits

	// Logger receives what the user does not see otherwise: changed shared
	// files, ignored signalling, serving errors. nil: slog.Default().
	Logger *slog.Logger
	// Clock is the time source (link times, signalling); nil: time.Now.
	Clock func() time.Time
}

// Sharing is one user's peer-to-peer file sharing: their share index, the
// manifest in their sigchain, and (once needed) a libp2p node and the
// signalling over NATS. Make one with [Open] and Close it when done. It is
// safe for concurrent use, and several processes may share one Home (a
// share made by one is served at once by another that is serving).
type Sharing struct {
	cfg      Config
	ownLog   bool          // Open's Discover made cfg.Client.Log: Close closes it
	dev      *kez.Identity // the device key: node, NATS login, signalling
	devKey   kez.PublicKey
	primary  *kez.Identity // the person's primary key; nil on a linked device
	keys     format.Keys   // the person's encryption keys (primary, else Config.Keys); nil: none
	me       kez.PublicKey // the person's key
	idx      *index
	chains   recipientChains // private files' recipients' chains
	groups   groupStates     // the chains of the groups private files went to
	refused  refusedKeys     // keys a share to a group refused lately
	sigc     *sigchain.Client
	resolver *handles.Resolver
	owners   ownerStates // the owners' chains as last verified
	http     *http.Client
	log      *slog.Logger
	now      func() time.Time

	serving atomic.Bool
	holders holderTable           // the haves kept about this install's public files
	answers signal.AnswerCounters // what serving did with signalling requests
	// work counts the calls under way (Fetch, Share, Unshare,
	// StartServing); Shutdown and Close stop it. done ends with Close.
	work      lifecycle.Gate
	done      context.Context
	closeDone context.CancelFunc

	mu     sync.Mutex
	nc     *nats.Conn
	ownNC  bool
	node   *Node
	sub    *nats.Subscription
	closed bool
	// stopAnnounce ends the haves of a re-sharing Serve and waits.
	stopAnnounce func()
}

// Errors of [Sharing]. Callers branch with errors.Is.
var (
	// ErrNotShared reports a name or CID that the owner does not share
	// (or not with this viewer). It is returned as a *[NotSharedError].
	ErrNotShared = errors.New("files: no such shared file")

	// ErrNoNATS reports a Fetch or Serve on a Sharing opened without NATS
	// or NATSURL (signalling between peers goes through the broker).
	ErrNoNATS = errors.New("files: no NATS connection")

	// ErrNoSigServer reports a Share or Unshare on a Sharing opened
	// without SigServerURL, the sig-server that holds the user's sigchain.
	ErrNoSigServer = errors.New("files: no sig-server")

	// ErrClosed reports a call after Shutdown or Close, and a Fetch or
	// Serve they ended.
	ErrClosed = errors.New("files: the sharing is closed")

	// ErrGroupAndHandles reports a Share given both [ToGroup] and [To]: a
	// private share goes to a group or to handles, not both.
	ErrGroupAndHandles = errors.New("files: a share goes to a group or to handles, not both")
)

// NotSharedError is [ErrNotShared] with the details.
type NotSharedError struct {
	Owner string // the owner's handle; "" for the user's own shares
	What  string // the name or CID asked for
}

// Error says whose files lack the name or CID.
func (e *NotSharedError) Error() string {
	if e.Owner == "" {
		return fmt.Sprintf("files: you share no file named %q or with that CID", e.What)
	}
	return fmt.Sprintf("files: %s shares no file named %q or with that CID that you may see", e.Owner, e.What)
}

// Is matches [ErrNotShared].
func (e *NotSharedError) Is(target error) bool { return target == ErrNotShared }

// Open completes cfg.Client ([client.Config.Discover]: the home domain and
// sig-server from the chat-server, unless given) and opens the user's
// sharing in its Home (creating the share index if needed). It does not
// connect to anything else yet: NATS and the libp2p node start with the
// first Fetch or Serve.
func Open(ctx context.Context, cfg Config) (*Sharing, error) {
	discovered := cfg.Client.Log == nil
	cc, err := cfg.Client.Discover(ctx)
	if err != nil {
		return nil, err
	}
	cfg.Client = cc
	s := &Sharing{cfg: cfg, dev: cc.DeviceIdentity(), devKey: cc.DeviceKey(), primary: cc.Identity, me: cc.PersonKey(),
		http: cc.HTTPClient, log: cc.Logger, now: cc.Clock, resolver: cc.Resolver}
	s.done, s.closeDone = context.WithCancel(context.Background())
	s.holders.lim = cfg.Holders.withDefaults()
	switch {
	case cc.Identity != nil:
		s.keys = cc.Identity
	case cfg.Keys != nil:
		s.keys = cfg.Keys
	}
	if cc.SigServerURL != "" {
		s.sigc = &sigchain.Client{BaseURL: cc.SigServerURL, HTTPClient: s.http, VerifyOptions: cc.Resolver.VerifyOptions, Log: cc.Log}
	}
	if cfg.NATS != nil {
		s.nc = cfg.NATS
	}
	idx, err := openIndex(cc.Home, s.log)
	if err != nil {
		if discovered {
			cc.Close()
		}
		return nil, err
	}
	s.idx, s.ownLog = idx, discovered
	return s, nil
}

// Shutdown goes offline gracefully: at once it answers no more locate
// requests, accepts no new blob request and takes no new call (Fetch,
// Share, Unshare and StartServing return [ErrClosed], Serve returns
// ErrClosed); then it waits until the calls under way returned and the
// node has served nothing for half a second (a fetch asks in several
// requests, and what was written must reach the fetcher), and closes as
// [Sharing.Close] does. If
// ctx ends first it closes at once and returns ctx's error.
func (s *Sharing) Shutdown(ctx context.Context) error {
	s.work.Stop()
	s.StopServing()
	err := lifecycle.Wait(ctx, s.work.Idle())
	if err == nil {
		s.mu.Lock()
		node := s.node
		s.mu.Unlock()
		if node != nil {
			err = node.transfersDone(ctx)
		}
	}
	return errors.Join(err, s.Close())
}

// Close closes the sharing at once: it stops serving (Serve returns
// [ErrClosed]; transfers being served are cut, and a fetcher resumes them
// later), ends the calls under way (a Fetch returns an error wrapping
// ErrClosed, keeping what it verified), and closes the node, the NATS
// connection it opened itself, the share index and the log pins Open
// opened (client.Config.Close). Use
// [Sharing.Shutdown] to let the work under way finish. It is safe to call
// more than once.
func (s *Sharing) Close() error {
	s.work.Stop()
	s.closeDone()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.stopServingLocked()
	var errs []error
	if s.node != nil {
		errs = append(errs, s.node.Close())
	}
	if s.ownNC && s.nc != nil {
		s.nc.Close()
	}
	errs = append(errs, s.idx.close())
	if s.ownLog {
		errs = append(errs, s.cfg.Client.Close())
	}
	return errors.Join(errs...)
}

// Key returns the user's (person's) key: the key of their sigchain, which
// others fetch from by handle.
func (s *Sharing) Key() kez.PublicKey { return s.me }

// DeviceKey returns this install's device key: its node's PeerID, the key
// its entries name as their serving device, and the key it signals with
// (the person's key on the primary device).
func (s *Sharing) DeviceKey() kez.PublicKey { return s.devKey }

// SharedFile is one file in the user's share index.
type SharedFile struct {
	Name      string
	Path      string  // where it is on disk (absolute)
	CID       cid.Cid // the blob served: the file, or its encryption if private
	Size      int64   // the file's size
	ModTime   time.Time
	MediaType string
	Private   bool
	// Recipients are the handles a private file is shared with (yourself
	// not included).
	Recipients []string
	// Group is the group (NAME@domain) a private file was shared with
	// ([ToGroup]), GroupID its ID; "" and zero otherwise.
	Group   string
	GroupID [32]byte
	// Offer, for a share to a group, is what the group's members are to
	// be sent (chat.Client.SendGroupFile): the file key with the owner,
	// the blob and the file's details (docs/spec/manifest.md §7). nil
	// otherwise. It holds the key: do not show it.
	Offer    *format.GroupFile
	SharedAt time.Time
}

func (r *shareRow) shared() SharedFile {
	sf := SharedFile{Name: r.Name, Path: r.Path, CID: r.CID, Size: r.Size, ModTime: time.Unix(0, r.MTimeNs).Truncate(time.Second),
		MediaType: r.MediaType, Private: r.Private, SharedAt: r.SharedAt, Recipients: []string{}}
	if r.Group != nil {
		sf.Group, sf.GroupID = r.Group.name, r.Group.id
		sf.Offer = &format.GroupFile{Group: r.Group.id, Owner: r.ownerKey, CID: r.CID, Key: r.Key, Name: r.Name,
			Size: r.Size, MediaType: r.MediaType, ModTime: sf.ModTime.UTC()}
	}
	for i, rc := range r.Recipients {
		if rc.Key != r.ownerKey {
			sf.Recipients = append(sf.Recipients, r.Handles[i])
		}
	}
	return sf
}

// Shared returns the files in the share index, in the order they were
// shared. It reads only the local index (what this machine serves); Browse
// with your own handle shows what your sigchain publishes.
func (s *Sharing) Shared(ctx context.Context) ([]SharedFile, error) {
	rows, err := s.idx.rows(ctx, true, "")
	if err != nil {
		return nil, err
	}
	out := make([]SharedFile, 0, len(rows))
	for _, r := range rows {
		r.ownerKey = s.me
		out = append(out, r.shared())
	}
	return out, nil
}

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
