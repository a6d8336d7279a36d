package files

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"time"

	"github.com/kez-lat/kez-chat/files/format"
	"github.com/kez-lat/kez-chat/internal/lifecycle"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
)

// ErrTicketStale reports a ticket that the owner's current manifest
// contradicts: its entry has another size or serving device now (the file
// was shared again since).
var ErrTicketStale = errors.New("files: the owner's list of shared files no longer matches the ticket")

// Defaults of [FetchTicket].
const (
	ticketWaitFirst    = 250 * time.Millisecond
	ticketWaitInterval = 5 * time.Second
)

// TicketFetchConfig configures [FetchTicket]. The zero value fetches a
// public ticket with a throw-away key.
type TicketFetchConfig struct {
	// Identity is the fetcher's key, its node's PeerID: a private file is
	// sent only to a recipient's key or one of their devices. nil: a key
	// made for this fetch and forgotten after it (enough for a public
	// file).
	Identity *kez.Identity
	// Keys open private entries (a linked device's keyring, see
	// [Config.Keys]); nil: Identity's.
	Keys format.Keys
	// HTTPClient reads the owner's sigchain from the ticket's sig-server;
	// nil: a client that follows no redirect, ignores proxy settings,
	// gives up after [TicketHTTPTimeout] and, unless AllowLocal, dials
	// only public addresses. A client given here is used as it is.
	HTTPClient *http.Client
	// AllowLocal lets the ticket make the fetcher contact its own machine
	// or network: a sig-server or addresses (a circuit's relay included,
	// DNS names once resolved) that are loopback, private, link-local or
	// in the other ranges of internal/netguard. Off: such addresses are
	// skipped, and a ticket with no other is ErrLocalAddress.
	AllowLocal bool
	// ListenAddrs are the fetcher's libp2p listen addresses (hole punching
	// needs one); empty: TCP and QUIC on every interface.
	ListenAddrs []string
	// Relays are circuit relay v2 relays the fetcher's node may reserve a
	// slot at ([NodeConfig.Relays]): they help hole punching when both
	// sides are behind NAT. The ticket's circuit addresses are dialled
	// without them.
	Relays []peer.AddrInfo
	// Libp2pOptions are passed to the fetcher's node
	// ([NodeConfig.Libp2pOptions]).
	Libp2pOptions []libp2p.Option
	// DialTimeout bounds one attempt to reach the owner's device; 0: 15 s.
	DialTimeout time.Duration
	// Logger receives what the caller does not see otherwise; nil
	// discards it.
	Logger *slog.Logger
	// Clock is the time source (the ticket's expiry, chain verification);
	// nil: time.Now.
	Clock func() time.Time
}

// FetchTicket fetches the file a ticket names (docs/spec/ticket.md §5)
// to dst: a file path, a folder to put it in under its name, or "" for
// its name in the current folder. It needs no NATS, no account and no
// registration: the fetcher's node dials the ticket's device at the
// ticket's addresses as [Sharing.Fetch] dials an owner (directly, else
// through a relay of a circuit address, waiting a little for hole
// punching to make a relayed connection direct; [Fetched.Route], Routes
// and Relay say which path the bytes took) and verifies every chunk
// against the CID, resuming an interrupted fetch on the next call.
//
// If the device is not the owner's key, it must be a current device of
// the owner's chain, read from the ticket's sig-server and verified
// against the owner's key. A private ticket needs cfg.Identity (or Keys)
// of a recipient: the owner's manifest, read the same way, must hold an
// entry for the CID that those keys open, which gives the name and key;
// else ErrForbidden, before anything is dialled.
//
// Options: [WithWait] retries while the device cannot be reached,
// [WithOverwrite], [WithProgress], [WithRoutes], [WithoutSync].
//
// Errors: a *[TicketExpiredError]; [ErrLocalAddress] (see AllowLocal); a *[DeviceError]; ErrForbidden; a
// *[NotSharedError] for a private entry the owner no longer lists;
// [ErrTicketStale]; an *[UnreachableError] (ErrUnreachable) when no
// address answers within the dial timeout (with WithWait: until the wait
// ends); the errors of [Node.Fetch]; sigchain's errors for the
// sig-server.
func FetchTicket(ctx context.Context, t *Ticket, dst string, cfg TicketFetchConfig, opts ...FetchOption) (*Fetched, error) {
	o := fetchOptions(opts)
	now := time.Now
	if cfg.Clock != nil {
		now = cfg.Clock
	}
	if !now().Before(t.Expires) {
		return nil, &TicketExpiredError{Expires: t.Expires}
	}
	if err := t.check(); err != nil {
		return nil, err
	}
	t, err := publicTicket(t, &cfg)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	who := t.Owner.String()
	e := format.Entry{Name: t.Name, Size: t.Size, CID: t.CID}
	if t.Device != t.Owner || t.Private {
		sc := &sigchain.Client{BaseURL: t.SigServer, HTTPClient: ticketHTTPClient(&cfg), VerifyOptions: []sigchain.VerifyOption{sigchain.WithClock(now)}}
		st, err := sc.FetchVerified(ctx, t.Owner, nil)
		if err != nil {
			return nil, fmt.Errorf("files: reading the ticket owner's sigchain at %s: %w", t.SigServer, err)
		}
		if _, err := servingDevice(who, st, t.Device); err != nil {
			return nil, err
		}
		if t.Private {
			if e, err = ticketEntry(t, st, cfg, who); err != nil {
				return nil, err
			}
		}
	}
	out, err := destination(dst, e.Name, o.overwrite)
	if err != nil {
		return nil, err
	}
	id := cfg.Identity
	if id == nil {
		if id, _, err = kez.NewIdentity(); err != nil {
			return nil, err
		}
	}
	lopts := cfg.Libp2pOptions
	if !cfg.AllowLocal {
		lopts = append(lopts[:len(lopts):len(lopts)], libp2p.ConnectionGater(newTicketGater(cfg.Relays)))
	}
	node, err := NewNode(NodeConfig{Identity: id, ListenAddrs: cfg.ListenAddrs, Logger: log, Libp2pOptions: lopts,
		Relays: cfg.Relays, DialTimeout: cfg.DialTimeout})
	if err != nil {
		return nil, err
	}
	defer node.Close()
	route, err := reachTicket(ctx, node, t, o, who)
	if err != nil {
		return nil, err
	}
	relay := node.relayOf(t.Device.PeerID())
	var tally routeTally
	opts = append(slices.Clip(opts), tally.option(o.routes))
	if t.Private {
		opts = append(opts, WithDecryption(e.Key, e.Size))
	}
	if err := node.Fetch(ctx, t.AddrInfo(), t.CID, out, opts...); err != nil {
		if errors.Is(err, format.ErrDecrypt) {
			return nil, fmt.Errorf("files: %q was received intact but does not decrypt with the key shared with you: %w", e.Name, err)
		}
		return nil, explainFetch(who, e, err)
	}
	if st, err := os.Stat(out); err != nil || st.Size() != e.Size {
		os.Remove(out)
		return nil, fmt.Errorf("%w: the file is not the %d bytes the ticket says", ErrTicketStale, e.Size)
	}
	f := &Fetched{Entry: e, Path: out}
	tally.fill(f, route, node, t.Device.PeerID(), relay)
	return f, nil
}

// ticketEntry finds the private entry of t in the owner's manifest on st
// among those the fetcher's keys open.
func ticketEntry(t *Ticket, st *sigchain.State, cfg TicketFetchConfig, who string) (format.Entry, error) {
	keys := cfg.Keys
	if keys == nil && cfg.Identity != nil {
		keys = cfg.Identity
	}
	m, err := (&owner{handle: who, state: st}).manifest()
	if err != nil {
		return format.Entry{}, err
	}
	if keys != nil {
		for _, e := range format.VisibleTo(m, keys) {
			if !e.CID.Equals(t.CID) {
				continue
			}
			dev := e.Device
			if dev.IsZero() {
				dev = t.Owner
			}
			if !e.Private || format.EncryptedSize(e.Size) != t.Size || dev != t.Device {
				return format.Entry{}, fmt.Errorf("%w: %s's entry for %s is another blob size or device now", ErrTicketStale, who, t.CID)
			}
			return e, nil
		}
	}
	for _, se := range m.Sealed {
		if se.CID.Equals(t.CID) {
			return format.Entry{}, fmt.Errorf("%w: %s shares this file privately with others, not with this key", ErrForbidden, who)
		}
	}
	return format.Entry{}, &NotSharedError{Owner: who, What: t.CID.String()}
}

// reachTicket connects node to the ticket's device as a handle's fetch
// does ([Node.connect]: direct addresses before circuit ones, then a
// little wait for hole punching to make a relayed connection direct) and
// returns the connection's route. With WithWait it tries again, after
// pauses growing to 5 s, until the device answers or ctx ends (or the
// wait's timeout passes).
func reachTicket(ctx context.Context, node *Node, t *Ticket, o fetchConfig, who string) (Route, error) {
	wctx := ctx
	if o.wait && o.waitTimeout > 0 {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(ctx, o.waitTimeout)
		defer cancel()
	}
	info := t.AddrInfo()
	pause := ticketWaitFirst
	for attempt := 1; ; attempt++ {
		route, err := node.connect(wctx, info, who)
		switch {
		case err == nil:
			return route, nil
		case ctx.Err() != nil:
			return "", ctx.Err()
		case route != "":
			return route, nil // connected; the wait's time ran out while hole punching
		}
		var ue *UnreachableError
		if !errors.As(err, &ue) {
			// The wait's time ran out while dialling.
			return "", node.unreachable(info, who, err)
		}
		if !o.wait || wctx.Err() != nil {
			return "", ue
		}
		if o.onWait != nil {
			o.onWait(attempt)
		}
		if !lifecycle.Sleep(wctx, spread(pause)) {
			if ctx.Err() != nil {
				return "", ctx.Err()
			}
			return "", ue
		}
		pause = min(2*pause, ticketWaitInterval)
	}
}
