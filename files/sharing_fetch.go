package files

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/files/format"
	"github.com/kez-lat/kez-chat/files/internal/signal"
	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/natsconn"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/nats-io/nats.go"
)

// owner is a resolved owner with a fresh, verified chain.
type owner struct {
	handle string
	key    kez.PublicKey
	state  *sigchain.State
}

// rules are the handle rules of the user's client: its home domain
// completes bare names.
func (s *Sharing) rules() handles.Rules {
	return handles.Rules{DefaultDomain: s.cfg.Client.Domain, AllowLocal: s.cfg.Client.AllowLocalDomains}
}

// resolveOwner resolves handle, asking its registry now, and brings the
// owner's verified chain up to date: the manifest is then the latest. The
// first time an owner is resolved their whole chain is fetched and
// verified; after that only what is new after the state kept from last
// time (see handles.Resolver.ResolveFresh).
func (s *Sharing) resolveOwner(ctx context.Context, handle string) (*owner, error) {
	h, err := s.rules().Parse(handle)
	if err != nil {
		return nil, err
	}
	known := s.owners.get(h)
	res, err := s.resolver.ResolveFresh(ctx, h, known)
	if err != nil {
		if known != nil && (errors.Is(err, sigchain.ErrFork) || errors.Is(err, sigchain.ErrRollback)) {
			// Not a pin: the next call verifies the chain whole again.
			s.owners.forget(h)
		}
		return nil, err
	}
	s.owners.put(h, res.State)
	return &owner{handle: res.Handle.String(), key: res.Key, state: res.State}, nil
}

// ownerStates keeps the last verified chain of each owner browsed or
// fetched from, so that the next look fetches only what is new.
type ownerStates struct {
	mu     sync.Mutex
	states map[handles.Handle]*sigchain.State
}

// maxOwnerStates bounds the owners remembered.
const maxOwnerStates = 1024

func (o *ownerStates) get(h handles.Handle) *sigchain.State {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.states[h]
}

func (o *ownerStates) put(h handles.Handle, st *sigchain.State) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.states == nil || len(o.states) >= maxOwnerStates {
		o.states = make(map[handles.Handle]*sigchain.State)
	}
	if cur := o.states[h]; cur == nil || cur.Key() != st.Key() || cur.Seqno() <= st.Seqno() {
		o.states[h] = st
	}
}

func (o *ownerStates) forget(h handles.Handle) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.states, h)
}

// deviceName names the owner's device dev in errors: the handle for the
// primary key, else `handle's device "name"`.
func (o *owner) deviceName(dev kez.PublicKey) string {
	if d, ok := o.state.DeviceOf(dev); ok && !d.Primary {
		return fmt.Sprintf("%s's device %q", o.handle, d.Name)
	}
	return o.handle
}

// manifest decodes the owner's latest manifest (empty if they never shared).
func (o *owner) manifest() (*format.Manifest, error) {
	body := o.state.SharedFiles()
	if body == nil {
		return &format.Manifest{}, nil
	}
	m, err := format.DecodeManifest(body)
	if err != nil {
		return nil, fmt.Errorf("files: %s's list of shared files cannot be read by this version: %w", o.handle, err)
	}
	return m, nil
}

// Browse returns the files handle shares that this user may see: every
// public entry, and each private entry shared with them, with its real name
// and key (see [format.Visible]). The owner's sigchain is fetched and verified
// here, so it works while the owner is offline. An owner who never shared
// anything gives an empty list.
func (s *Sharing) Browse(ctx context.Context, handle string) ([]format.Entry, error) {
	o, err := s.resolveOwner(ctx, handle)
	if err != nil {
		return nil, err
	}
	m, err := o.manifest()
	if err != nil {
		return nil, err
	}
	return format.VisibleTo(m, s.keys), nil
}

// Fetched is the outcome of a [Sharing.Fetch].
type Fetched struct {
	format.Entry
	Path string // where the file now is

	// Route is the route that carried the most bytes (the connection's
	// route when nothing had to be fetched), Routes the bytes received
	// over each route used, and Relay the relay (its address, ending in
	// /p2p/<relay>) when one carried bytes or the connection.
	Route  Route
	Routes map[Route]int64
	Relay  ma.Multiaddr
}

// Fetch downloads the file handle shares under the name (or CID) nameOrCID
// to outPath: a file path, a folder to put it in under its shared name, or
// "" for its shared name in the current folder.
//
// It reads the owner's verified manifest, checks that the device the entry
// names (else the owner's primary key) is a current device of the owner's
// chain, asks that device's client over NATS where it listens (a signed
// answer, see [Sharing.Locate]), dials that device's PeerID (directly,
// else through a relay the device holds a reservation with, waiting a
// little for hole punching to make a relayed connection direct;
// [Fetched.Route] says which) and downloads
// the blob with [Node.Fetch]: every chunk is verified
// against the CID before it is written, into outPath+[PartialSuffix], and
// an interrupted fetch resumes from what was verified on the next call. A
// private entry is decrypted as it streams in ([WithDecryption]): the
// partial file holds plaintext, and no ciphertext is stored. outPath
// exists only once the whole file is verified (and decrypted). Options: [WithWait] waits for an offline
// owner, [WithOverwrite] replaces an existing file, [WithFileKey] fetches
// a file shared with a group with the key its offer gave, [WithProgress]
// and [WithoutSync] as for Node.Fetch.
//
// Errors: a *[NotSharedError] for a name or CID the viewer cannot see;
// ErrForbidden for a private entry meant for others (with
// [ErrSharedWithGroup] for one shared with a group, fetched without its
// offer); [ErrOfferMismatch] for an offer the owner's manifest does not
// confirm; a *[DeviceError]
// (ErrDeviceRevoked, ErrNotOwnersDevice) for an entry served by a device
// that is not a current device of the owner's chain; an *[OfflineError]
// (ErrOwnerOffline) if the owner does not answer; an *[UnreachableError]
// (ErrUnreachable) if none of the addresses it answered connects within
// the node's dial timeout (it is asked once more, 2 s later, in case it
// has just made its relay reservation); an *[UnsafePartialError]
// (ErrUnsafePartial) for a partial or state file at outPath that a fetch
// of the user's did not leave; ErrNotFound, ErrCorrupt
// and the other errors of Node.Fetch; a *fs.PathError naming the
// destination that wraps fs.ErrExist.
func (s *Sharing) Fetch(ctx context.Context, handle, nameOrCID, outPath string, opts ...FetchOption) (*Fetched, error) {
	if !s.work.Enter() {
		return nil, ErrClosed
	}
	defer s.work.Leave()
	// Close ends the fetch: its ctx is cancelled, with ErrClosed as cause.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	defer context.AfterFunc(s.done, func() { cancel(ErrClosed) })()
	f, err := s.fetch(ctx, handle, nameOrCID, outPath, opts)
	if err != nil && errors.Is(context.Cause(ctx), ErrClosed) {
		err = fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return f, err
}

func (s *Sharing) fetch(ctx context.Context, handle, nameOrCID, outPath string, opts []FetchOption) (*Fetched, error) {
	o := fetchOptions(opts)
	ow, err := s.resolveOwner(ctx, handle)
	if err != nil {
		return nil, err
	}
	m, err := ow.manifest()
	if err != nil {
		return nil, err
	}
	var e format.Entry
	if o.offer != nil {
		e, err = offerEntry(ow, m, o.offer, nameOrCID)
	} else {
		e, err = findEntry(ow.handle, m, format.VisibleTo(m, s.keys), nameOrCID)
	}
	if errors.Is(err, ErrForbidden) && !errors.Is(err, ErrSharedWithGroup) && s.primary == nil {
		// Its wraps may well be to this device's person, of a generation
		// this linked device was not sent (yet).
		return nil, fmt.Errorf("%w: %w: %s shares %s privately", ErrForbidden, ErrNoKey, ow.handle, nameOrCID)
	}
	if err != nil {
		return nil, err
	}
	dev, err := servingDevice(ow.handle, ow.state, e.Device)
	if err != nil {
		return nil, err
	}
	dst, err := destination(outPath, e.Name, o.overwrite)
	if err != nil {
		return nil, err
	}
	node, nc, err := s.network(ctx)
	if err != nil {
		return nil, err
	}
	info, route, err := s.reach(ctx, node, nc, ow, dev, o)
	if err != nil {
		return nil, err
	}
	relay := node.relayOf(info.ID)
	var tally routeTally
	opts = append(slices.Clip(opts), tally.option(o.routes))
	if e.Private {
		opts = append(opts, WithDecryption(e.Key, e.Size))
	} else {
		opts = append(opts, WithSources(s.askHolders(ctx, nc, dev, e.CID, info.Addrs)...))
	}
	if err := node.Fetch(ctx, info, e.CID, dst, opts...); err != nil {
		if errors.Is(err, format.ErrDecrypt) {
			return nil, fmt.Errorf("files: %q from %s was received intact but does not decrypt with the key shared with you (the owner's mistake, or a forgery): %w", e.Name, ow.handle, err)
		}
		return nil, explainFetch(ow.handle, e, err)
	}
	if !e.Private {
		s.recordFetch(ctx, ow, dev, e, dst)
	}
	f := &Fetched{Entry: e, Path: dst}
	tally.fill(f, route, node, info.ID, relay)
	return f, nil
}

// findEntry picks the entry named nameOrCID among those the viewer sees,
// else the one with that CID. A CID matches in any text form ParseCID
// accepts (base32 in either case, base58btc…): CIDs are compared as CIDs.
func findEntry(handle string, m *format.Manifest, visible []format.Entry, nameOrCID string) (format.Entry, error) {
	for _, e := range visible {
		if e.Name == nameOrCID {
			return e, nil
		}
	}
	c, err := format.ParseCID(nameOrCID)
	if err != nil {
		return format.Entry{}, &NotSharedError{Owner: handle, What: nameOrCID}
	}
	for _, e := range visible {
		if e.CID.Equals(c) {
			return e, nil
		}
	}
	for _, se := range m.Sealed {
		if se.CID.Equals(c) && se.Group != ([32]byte{}) {
			return format.Entry{}, fmt.Errorf("%w: %w: %s shares %s with a group", ErrForbidden, ErrSharedWithGroup, handle, nameOrCID)
		}
		if se.CID.Equals(c) {
			return format.Entry{}, fmt.Errorf("%w: %s shares %s privately with others, not with you", ErrForbidden, handle, nameOrCID)
		}
	}
	return format.Entry{}, &NotSharedError{Owner: handle, What: nameOrCID}
}

// offerEntry is the entry a group file offer f describes, once the
// owner's manifest m confirms it (see [WithFileKey]).
func offerEntry(ow *owner, m *format.Manifest, f *format.GroupFile, nameOrCID string) (format.Entry, error) {
	if ow.key != f.Owner {
		return format.Entry{}, fmt.Errorf("%w: %w: the offer is from %s, and %s names %s", ErrOfferMismatch, handles.ErrMismatch, f.Owner, ow.handle, ow.key)
	}
	if c, err := format.ParseCID(nameOrCID); nameOrCID != f.Name && (err != nil || !c.Equals(f.CID)) {
		return format.Entry{}, fmt.Errorf("%w: the offer is for %q (%s), not %q", ErrOfferMismatch, f.Name, f.CID, nameOrCID)
	}
	for _, se := range m.Sealed {
		if !se.CID.Equals(f.CID) {
			continue
		}
		if se.Group != f.Group {
			return format.Entry{}, fmt.Errorf("%w: %s shares %s, but not with the group the offer came in", ErrOfferMismatch, ow.handle, f.CID)
		}
		if se.BlobSize != format.EncryptedSize(f.Size) {
			return format.Entry{}, fmt.Errorf("%w: %s's entry for %s is a blob of %d bytes, not the encryption of the %d bytes offered", ErrOfferMismatch, ow.handle, f.CID, se.BlobSize, f.Size)
		}
		e := f.Entry()
		e.Device = se.Device
		return e, nil
	}
	for _, e := range m.Public {
		if e.CID.Equals(f.CID) {
			return format.Entry{}, fmt.Errorf("%w: %s shares %s publicly, not with a group", ErrOfferMismatch, ow.handle, f.CID)
		}
	}
	return format.Entry{}, &NotSharedError{Owner: ow.handle, What: f.Name}
}

// destination decides where a fetch writes, refusing a partial or state
// file there that is not the user's own (CheckPartial) before the owner is
// asked anything.
func destination(outPath, name string, overwrite bool) (string, error) {
	dst := outPath
	if dst == "" {
		dst = name
	} else if st, err := os.Stat(dst); err == nil && st.IsDir() {
		dst = filepath.Join(dst, name)
	}
	st, err := os.Lstat(dst)
	switch {
	case err == nil && st.IsDir():
		return "", fmt.Errorf("files: %s is a folder", dst)
	case err == nil && !overwrite:
		return "", &fs.PathError{Op: "fetch to", Path: dst, Err: fs.ErrExist}
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("files: %s: %w", dst, err)
	}
	if err := CheckPartial(dst); err != nil {
		return "", err
	}
	return dst, nil
}

// explainFetch names the file and the owner in a Node.Fetch error.
func explainFetch(handle string, e format.Entry, err error) error {
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("files: fetching %q from %s stopped; what was verified is kept, and fetching again resumes: %w", e.Name, handle, err)
	case errors.Is(err, ErrCorrupt):
		return fmt.Errorf("files: %s's node sent data for %q that does not match its CID, so the fetch stopped; nothing unverified was kept: %w", handle, e.Name, err)
	case errors.Is(err, ErrForbidden), errors.Is(err, ErrNotFound), errors.Is(err, ErrBusy):
		return fmt.Errorf("files: %s would not send %q: %w", handle, e.Name, err)
	}
	return fmt.Errorf("files: fetching %q from %s: %w", e.Name, handle, err)
}

// Locate asks one of handle's devices where its node listens and returns
// the verified answer (docs/spec/signalling.md), for callers that drive a
// [Node] themselves: o.Device, or the owner's primary key if zero (an
// entry's [format.Entry.Device] says which device serves it). The device
// must be a current device of the owner's verified chain, else a
// *[DeviceError].
func (s *Sharing) Locate(ctx context.Context, handle string, o LocateOptions) (peer.AddrInfo, error) {
	ow, err := s.resolveOwner(ctx, handle)
	if err != nil {
		return peer.AddrInfo{}, err
	}
	dev, err := servingDevice(ow.handle, ow.state, o.Device)
	if err != nil {
		return peer.AddrInfo{}, err
	}
	_, nc, err := s.network(ctx)
	if err != nil {
		return peer.AddrInfo{}, err
	}
	if o.OwnerName == "" {
		o.OwnerName = ow.deviceName(dev)
	}
	if o.Timeout == 0 {
		o.Timeout = s.cfg.LocateTimeout
	}
	if o.Now == nil {
		o.Now = s.now
	}
	return signal.Locate(ctx, nc, s.devKey, dev, o)
}

// Node returns the sharing's libp2p node, starting it (and NATS) if needed.
func (s *Sharing) Node() (*Node, error) {
	n, _, err := s.network(context.Background())
	return n, err
}

// network starts the libp2p node and logs in to NATS (with natsconn, as
// chat does) if not done yet.
func (s *Sharing) network(ctx context.Context) (*Node, *nats.Conn, error) {
	return s.startNetwork(ctx, false)
}

// startNetwork is network; a node started to serve listens on the ports
// recorded in the Home (see stableListen).
func (s *Sharing) startNetwork(ctx context.Context, serve bool) (*Node, *nats.Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, nil, ErrClosed
	}
	if s.nc == nil {
		if s.cfg.Client.NATSURL == "" {
			return nil, nil, ErrNoNATS
		}
		opts := []nats.Option{nats.Name("kez files " + s.devKey.String()), natsconn.Logger(s.log)}
		nc, err := natsconn.Connect(ctx, s.cfg.Client.NATSURL, s.dev, append(opts, s.cfg.Client.NATSOptions...)...)
		if err != nil {
			return nil, nil, err
		}
		s.nc, s.ownNC = nc, true
	}
	if s.node == nil {
		relays, err := ParseRelays(s.cfg.Client.Relays)
		if err != nil {
			return nil, nil, err
		}
		nc := NodeConfig{
			Relays:        relays,
			reserveLater:  true,
			Identity:      s.dev,
			ListenAddrs:   s.cfg.ListenAddrs,
			Source:        servingSource{s},
			Policy:        servePolicy{s},
			Logger:        s.log,
			Libp2pOptions: s.cfg.Libp2pOptions,
			MaxUploadRate: s.cfg.MaxUploadRate,
		}
		n, err := s.newServingNode(nc, serve)
		if err != nil {
			return nil, nil, err
		}
		s.node = n
	}
	return s.node, s.nc, nil
}

// servingSource serves the index only while the Sharing is serving, so
// that an owner who stopped serving is offline for blobs too.
type servingSource struct{ s *Sharing }

func (g servingSource) OpenBlob(ctx context.Context, c cid.Cid) (Blob, error) {
	if !g.s.serving.Load() {
		return nil, ErrNotFound
	}
	b, err := g.s.idx.OpenBlob(ctx, c)
	if err != nil {
		return g.s.openReshared(ctx, c, err)
	}
	return b, nil
}

// StartServing goes online: it starts the node if needed, answers locate
// requests for this install's device key and serves the files of its
// share index, until
// StopServing or Close. It returns once the broker has the subscription, so
// a fetcher asking afterwards gets an answer.
func (s *Sharing) StartServing(ctx context.Context) error {
	if !s.work.Enter() {
		return ErrClosed
	}
	defer s.work.Leave()
	node, nc, err := s.startNetwork(ctx, true)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.sub != nil {
		return nil
	}
	sub, err := signal.AnswerLocates(nc, s.dev, func() []ma.Multiaddr { return node.Addrs() }, signal.AnswerOptions{
		Logger: s.log, Now: s.now, OnHave: s.onHave,
		Holders: func(c cid.Cid) [][]byte { return s.holders.list(c, s.now()) },
		Budget:  s.cfg.Answers.budget(), Counters: &s.answers,
	})
	if err != nil {
		return fmt.Errorf("files: listening for fetchers on NATS: %w", err)
	}
	fctx, cancel := context.WithTimeout(ctx, natsconn.ConnectTimeout)
	defer cancel()
	if err := nc.FlushWithContext(fctx); err != nil {
		sub.Unsubscribe()
		return fmt.Errorf("files: listening for fetchers on NATS: %w", err)
	}
	s.sub = sub
	s.serving.Store(true)
	node.reserve()
	if s.cfg.Reshare {
		actx, stop := context.WithCancel(s.done)
		done := make(chan struct{})
		s.stopAnnounce = func() { stop(); <-done }
		go func() { defer close(done); s.announce(actx, nc, node) }()
	}
	s.recordServing(node)
	return nil
}

// StopServing goes offline: locate requests are no longer answered and
// blob requests are refused. Transfers already running finish their
// current request.
func (s *Sharing) StopServing() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopServingLocked()
}

func (s *Sharing) stopServingLocked() {
	s.serving.Store(false)
	if s.stopAnnounce != nil {
		s.stopAnnounce()
		s.stopAnnounce = nil
	}
	if s.sub != nil {
		s.sub.Unsubscribe()
		s.sub = nil
	}
}

// Serve is StartServing, then serves until ctx ends (it stops serving and
// returns nil then) or the sharing is shut down or closed (it returns
// [ErrClosed]); or it returns the error that kept it from starting.
func (s *Sharing) Serve(ctx context.Context) error {
	if err := s.StartServing(ctx); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		s.StopServing()
		return nil
	case <-s.work.Stopped():
		return ErrClosed
	}
}

// Addrs returns the addresses the node listens on (nil before it started).
func (s *Sharing) Addrs() []ma.Multiaddr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.node == nil {
		return nil
	}
	return s.node.Addrs()
}

// Stats returns the node's serving counters (zero before it started).
func (s *Sharing) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.node == nil {
		return Stats{Holders: s.holders.stats(), Signalling: signallingStats(&s.answers)}
	}
	st := s.node.Stats()
	st.Holders = s.holders.stats()
	st.Signalling = signallingStats(&s.answers)
	return st
}
