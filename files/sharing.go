package files

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
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
