package files

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kez-lat/kez-chat/files/format"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	"golang.org/x/time/rate"
)

// uploadLimiter paces the chunk bytes a node sends ([NodeConfig.MaxUploadRate]):
// a *rate.Limiter.
type uploadLimiter interface {
	WaitN(ctx context.Context, n int) error
}

// Defaults of [NodeConfig].
const (
	defaultMaxStreamsPerPeer = 8
	defaultMaxStreams        = 64
	defaultIdleTimeout       = 30 * time.Second
	defaultHolePunchWait     = 5 * time.Second
	defaultDialTimeout       = 15 * time.Second
	defaultStallTimeout      = 30 * time.Second
)

// defaultListenAddrs are the listen addresses of a [Node] whose
// [NodeConfig.ListenAddrs] is empty.
var defaultListenAddrs = []string{
	"/ip4/0.0.0.0/tcp/0",
	"/ip4/0.0.0.0/udp/0/quic-v1",
	"/ip6/::/tcp/0",
	"/ip6/::/udp/0/quic-v1",
}

// NodeConfig configures a [Node]. Only Identity is required.
type NodeConfig struct {
	// Identity is the user's key; the node's libp2p PeerID is
	// Identity.PublicKey().PeerID(), so the transport handshake proves to a
	// peer that it talks to this user.
	Identity *kez.Identity

	// ListenAddrs are libp2p multiaddrs (TCP and QUIC v1 are supported),
	// e.g. "/ip4/127.0.0.1/tcp/0". Empty means TCP and QUIC on every
	// interface (IPv4 and IPv6), on ports the system picks.
	ListenAddrs []string

	// Source holds the blobs to serve. Nil serves nothing (every request is
	// answered "not found"): a fetch-only node.
	Source BlobSource

	// Policy decides who may fetch what. Nil means every peer may fetch
	// every blob Source holds.
	Policy Policy

	// MaxStreamsPerPeer and MaxStreams bound the requests served at once,
	// per remote peer and in total; a request over either limit is answered
	// "busy" ([ErrBusy]). Zero means 8 per peer and 64 in total.
	MaxStreamsPerPeer int
	MaxStreams        int

	// IdleTimeout bounds how long a served request waits for the fetcher to
	// send its request or to accept more data. Zero means 30 s.
	IdleTimeout time.Duration

	// MaxUploadRate bounds the chunk bytes the node sends, in bytes per
	// second over all the streams it serves: a token bucket holding one
	// chunk (256 KiB), taken from before each chunk is sent. Zero means
	// unlimited.
	MaxUploadRate int64

	// Logger receives serving errors; nil discards them.
	Logger *slog.Logger

	// Libp2pOptions are appended to the node's libp2p options (e.g. NAT
	// port mapping). Options that change the identity or transports break
	// the node's contract.
	Libp2pOptions []libp2p.Option

	// Relays are circuit relay v2 relays (each with its addresses) the
	// node keeps a reservation with, so that peers that cannot dial it
	// directly reach it through them; its circuit addresses are then among
	// [Node.Addrs]. Empty: no reservations (the node still dials other
	// peers' circuit addresses).
	Relays []peer.AddrInfo

	// NoHolePunching turns DCUtR hole punching off: a relayed connection
	// then stays relayed.
	NoHolePunching bool

	// HolePunchWait is how long a fetch whose only connection to the owner
	// is relayed waits for hole punching to give a direct one before it
	// moves data over the relay. Zero means 5 s; negative means not at all.
	HolePunchWait time.Duration

	// StallTimeout bounds how long a fetch waits for a source's answer,
	// and then for each chunk: a source silent for longer (or trickling
	// less than a chunk in that time) has its stream given up, counted in
	// [Stats.Stalls], and is asked again on a fresh stream as after a
	// broken one, then dropped; its chunks go to the other sources. Zero
	// means 30 s.
	StallTimeout time.Duration

	// DialTimeout bounds how long a fetch tries to connect to the owner
	// (every address, relays included) before it fails with an
	// *[UnreachableError]. Zero means 15 s.
	DialTimeout time.Duration

	// reserveLater: reservations wait for Node.reserve (a Sharing makes
	// them once it serves, not for a fetch).
	reserveLater bool
}

// Node is a libp2p host that serves blobs over the blob exchange protocol
// (/kez/blobs/1.0.0, docs/spec/blobs.md) and fetches them from other
// nodes. It is safe for concurrent use. Close it when done.
type Node struct {
	host        host.Host
	id          *kez.Identity
	source      BlobSource
	policy      Policy
	perPeerMax  int
	totalMax    int
	idleTimeout time.Duration
	log         *slog.Logger
	upload      uploadLimiter // nil: unlimited

	punched       *punchedConns // connections hole punching made
	conns         connWatch     // wakes connect's waiters on new connections
	rsv           *reservations // nil without relays
	reserveOnce   sync.Once
	holePunchWait time.Duration // < 0: do not wait
	dialTimeout   time.Duration
	stallTimeout  time.Duration

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc

	mu         sync.Mutex
	perPeer    map[peer.ID]int
	total      int
	idle       chan struct{}   // closed while total is 0
	busySpells int             // how many times total left 0
	fetching   map[string]bool // destinations of running fetches
	served     servedSet       // who was sent the last chunk of which blob

	watching atomic.Bool // a Sharing records its addresses (recordServing)

	stats struct {
		requests, refused atomic.Int64
		chunks, bytes     atomic.Int64
		stalls            atomic.Int64
		copies            atomic.Int64
		duplicates        atomic.Int64
	}
}

// NewNode starts a node listening on cfg.ListenAddrs.
func NewNode(cfg NodeConfig) (*Node, error) {
	if cfg.Identity == nil {
		return nil, errors.New("files: a node needs an identity")
	}
	priv, err := crypto.UnmarshalEd25519PrivateKey(cfg.Identity.Ed25519PrivateKey())
	if err != nil {
		return nil, fmt.Errorf("files: converting the identity key for libp2p: %w", err)
	}
	listen := cfg.ListenAddrs
	if len(listen) == 0 {
		listen = defaultListenAddrs
	}
	opts := []libp2p.Option{
		libp2p.Identity(priv),
		libp2p.ListenAddrStrings(listen...),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(quic.NewTransport),
		libp2p.DisableMetrics(),
	}
	var punched *punchedConns // nil: no hole punching
	if !cfg.NoHolePunching {
		punched = newPunchedConns()
	}
	opts = append(opts, natOptions(punched)...)
	opts = append(opts, cfg.Libp2pOptions...)
	h, err := libp2p.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("files: starting the libp2p host: %w", err)
	}
	n := &Node{
		host:        h,
		id:          cfg.Identity,
		source:      cfg.Source,
		policy:      cfg.Policy,
		perPeerMax:  cfg.MaxStreamsPerPeer,
		totalMax:    cfg.MaxStreams,
		idleTimeout: cfg.IdleTimeout,
		log:         cfg.Logger,
		perPeer:     map[peer.ID]int{},
		fetching:    map[string]bool{},
		idle:        make(chan struct{}),

		punched:       punched,
		holePunchWait: cmp.Or(cfg.HolePunchWait, defaultHolePunchWait),
		dialTimeout:   cmp.Or(cfg.DialTimeout, defaultDialTimeout),
		stallTimeout:  cfg.StallTimeout,
	}
	close(n.idle)
	if cfg.MaxUploadRate < 0 {
		h.Close()
		return nil, fmt.Errorf("files: a negative upload rate (%d bytes/s)", cfg.MaxUploadRate)
	}
	if cfg.MaxUploadRate > 0 {
		n.upload = rate.NewLimiter(rate.Limit(cfg.MaxUploadRate), format.ChunkSize)
	}
	if n.policy == nil {
		n.policy = allowAll
	}
	if n.perPeerMax <= 0 {
		n.perPeerMax = defaultMaxStreamsPerPeer
	}
	if n.totalMax <= 0 {
		n.totalMax = defaultMaxStreams
	}
	if n.idleTimeout <= 0 {
		n.idleTimeout = defaultIdleTimeout
	}
	if n.stallTimeout <= 0 {
		n.stallTimeout = defaultStallTimeout
	}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	h.SetStreamHandler(protocol.ID(protocolID), n.handleStream)
	n.watchConns()
	if len(cfg.Relays) > 0 {
		n.rsv = newReservations(n, cfg.Relays)
		if !cfg.reserveLater {
			n.reserve()
		}
	}
	return n, nil
}

// reserve starts keeping the reservations with the node's relays, once.
func (n *Node) reserve() {
	if n.rsv != nil {
		n.reserveOnce.Do(func() { n.rsv.start(n.ctx) })
	}
}

// Close stops serving, closes every connection and the host.
func (n *Node) Close() error {
	n.cancel()
	if n.rsv != nil {
		n.rsv.done.Wait()
	}
	n.host.RemoveStreamHandler(protocol.ID(protocolID))
	return n.host.Close()
}

// ID returns the node's libp2p PeerID (the user's key as a PeerID).
func (n *Node) ID() peer.ID { return n.host.ID() }

// Addrs returns the addresses the node can be reached at: those it
// listens on and, with [NodeConfig.Relays], its circuit addresses through
// the relays it holds a reservation with.
func (n *Node) Addrs() []ma.Multiaddr {
	relayed, _ := n.rsv.addrs()
	return append(n.host.Addrs(), relayed...)
}

// RelayAddrs returns the node's circuit addresses
// (<relay address>/p2p/<relay>/p2p-circuit, one per address of each relay
// of [NodeConfig.Relays] it holds a reservation with; nil without relays)
// and a channel closed when that list next changes (nil without relays).
func (n *Node) RelayAddrs() (addrs []ma.Multiaddr, changed <-chan struct{}) {
	return n.rsv.addrs()
}

// AddrInfo returns the node's PeerID and addresses, what a fetcher needs to
// dial it.
func (n *Node) AddrInfo() peer.AddrInfo {
	return peer.AddrInfo{ID: n.host.ID(), Addrs: n.Addrs()}
}

// Host returns the underlying libp2p host, for signalling and diagnostics.
// Do not close it; close the Node.
func (n *Node) Host() host.Host { return n.host }

// OwnerInfo returns the dialling information of a user given their key and
// the addresses they announced: the PeerID is derived from the key, so a
// connection succeeds only if the far end holds that key.
func OwnerInfo(owner kez.PublicKey, addrs ...ma.Multiaddr) peer.AddrInfo {
	return peer.AddrInfo{ID: owner.PeerID(), Addrs: addrs}
}

// Stats are counters of what a node served since it started.
type Stats struct {
	Requests     int64 // requests accepted
	Refused      int64 // requests refused (policy, not found, busy, malformed)
	ChunksServed int64 // chunks sent
	BytesServed  int64 // chunk bytes sent (not counting hashes and framing)
	// Stalls counts the streams this node's fetches gave up on because the
	// source sent nothing for [NodeConfig.StallTimeout].
	Stalls int64
	// EndGameCopies counts the tasks this node's fetches copied in their
	// end game (docs/spec/blobs.md §7): a source with nothing left to do
	// fetching the rest of another source's task, the first verified copy
	// of each chunk kept.
	EndGameCopies int64
	// DuplicateChunks counts the verified chunks those copies received
	// after another copy was kept, dropped unwritten.
	DuplicateChunks int64
	// Holders counts the haves and holders requests a Sharing's serving
	// handled (docs/spec/signalling.md §6); zero for a bare Node.
	Holders HolderStats
	// Signalling counts the requests a Sharing's serving answered,
	// cookied and dropped (docs/spec/signalling.md §7); zero for a bare
	// Node.
	Signalling SignallingStats
}

// Stats returns the node's serving counters.
func (n *Node) Stats() Stats {
	return Stats{
		Requests:        n.stats.requests.Load(),
		Refused:         n.stats.refused.Load(),
		ChunksServed:    n.stats.chunks.Load(),
		BytesServed:     n.stats.bytes.Load(),
		Stalls:          n.stats.stalls.Load(),
		EndGameCopies:   n.stats.copies.Load(),
		DuplicateChunks: n.stats.duplicates.Load(),
	}
}
