package signal

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"strings"
	"time"

	"github.com/kez-lat/kez-chat/files/internal/addrs"
	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/nats-io/nats.go"
)

// Defaults of [LocateOptions].
const (
	// DefaultLocateTimeout is how long one locate request waits for the
	// owner's answer.
	DefaultLocateTimeout = 3 * time.Second
	// DefaultMaxWaitInterval caps the pause between two requests of a
	// waiting locate.
	DefaultMaxWaitInterval = 5 * time.Second

	firstWaitInterval = 250 * time.Millisecond
)

// ErrOwnerOffline reports an owner whose client did not answer: it is not
// serving (files.Sharing.Serve; kez serve on the command line). It is returned as a
// *[OfflineError].
var ErrOwnerOffline = errors.New("files: the owner is offline")

// OfflineError is [ErrOwnerOffline] with who was asked.
type OfflineError struct {
	Owner  string        // the handle, or the key if no handle was given
	Waited time.Duration // how long a waiting locate waited; 0 if it did not wait
}

// Error names the owner and how long a waiting fetch waited.
func (e *OfflineError) Error() string {
	if e.Waited > 0 {
		return fmt.Sprintf("files: %s did not come online within %s", e.Owner, e.Waited.Round(time.Second))
	}
	return fmt.Sprintf("files: %s is offline", e.Owner)
}

// Is matches [ErrOwnerOffline].
func (e *OfflineError) Is(target error) bool { return target == ErrOwnerOffline }

// LocateOptions adjust [Locate]. The zero value asks once.
type LocateOptions struct {
	// OwnerName names the owner in errors (their handle); empty: the key.
	OwnerName string
	// Timeout bounds the wait for one answer; 0 means DefaultLocateTimeout.
	Timeout time.Duration
	// Wait keeps asking, with growing pauses (at most MaxWaitInterval),
	// until the owner answers or ctx ends; the error is then an
	// *[OfflineError] with Waited set (ctx's own error if it was cancelled).
	Wait bool
	// MaxWaitInterval caps the pause between requests; 0 means
	// DefaultMaxWaitInterval.
	MaxWaitInterval time.Duration
	// OnWait, if set, is called after each unanswered request of a waiting
	// locate, before the pause (for a "waiting for alice…" line).
	OnWait func(attempt int)
	// Now is the clock for request and answer times; nil means time.Now.
	Now func() time.Time
	// Device is, for files.Sharing.Locate, which of the owner's devices
	// to locate; zero means the owner's primary key. Locate itself asks
	// its owner argument and ignores it.
	Device kez.PublicKey
}

// Locate asks owner's client, over the NATS connection nc, where its node
// listens, and returns the verified answer as dialling information: the
// PeerID derived from owner (so the libp2p handshake proves the far end
// holds that key) and the addresses the owner signed. me is the key nc is
// logged in with; the answer comes back on a fresh subject under
// _INBOX.<me>., and anything arriving there that is not the owner's signed
// answer to this request is ignored.
//
// An owner who does not answer gives an *[OfflineError] matching
// [ErrOwnerOffline]. Locate is safe for concurrent use.
func Locate(ctx context.Context, nc *nats.Conn, me, owner kez.PublicKey, o LocateOptions) (peer.AddrInfo, error) {
	if o.Timeout <= 0 {
		o.Timeout = DefaultLocateTimeout
	}
	if o.MaxWaitInterval <= 0 {
		o.MaxWaitInterval = DefaultMaxWaitInterval
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	name := cmp.Or(o.OwnerName, owner.String())
	start := o.Now()
	pause := min(firstWaitInterval, o.MaxWaitInterval)
	for attempt := 1; ; attempt++ {
		info, err := locateOnce(ctx, nc, me, owner, o)
		if errors.Is(err, context.DeadlineExceeded) && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return peer.AddrInfo{}, &OfflineError{Owner: name, Waited: waited(o, start)}
		}
		if !errors.Is(err, errNoAnswer) {
			return info, err
		}
		if !o.Wait {
			return peer.AddrInfo{}, &OfflineError{Owner: name}
		}
		if o.OnWait != nil {
			o.OnWait(attempt)
		}
		// Jitter spreads the requests of many waiting fetchers.
		d := pause/2 + mrand.N(pause/2+1)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return peer.AddrInfo{}, &OfflineError{Owner: name, Waited: waited(o, start)}
			}
			return peer.AddrInfo{}, ctx.Err()
		case <-t.C:
		}
		pause = min(2*pause, o.MaxWaitInterval)
	}
}

// waited returns how long a waiting locate waited (0 if it did not wait).
func waited(o LocateOptions, start time.Time) time.Duration {
	if !o.Wait {
		return 0
	}
	return max(o.Now().Sub(start), time.Millisecond)
}

// answerQueue is how many messages on a reply subject wait to be checked.
const answerQueue = 16

// errNoAnswer: no responder on the owner's subject, or no valid answer in
// time.
var errNoAnswer = errors.New("files: no answer")

func locateOnce(ctx context.Context, nc *nats.Conn, me, owner kez.PublicKey, o LocateOptions) (peer.AddrInfo, error) {
	req := LocateRequest{Owner: owner, Requester: me, Time: o.Now()}
	if _, err := rand.Read(req.Nonce[:]); err != nil {
		return peer.AddrInfo{}, fmt.Errorf("files: reading randomness: %w", err)
	}
	body, err := req.Marshal()
	if err != nil {
		return peer.AddrInfo{}, err
	}
	reply := wire.ReplyInbox(me.String()) + ".p2p" + hex.EncodeToString(req.Nonce[:])
	// A small channel of our own: SubscribeSync would allocate a 64 Ki-slot
	// one per request. Only a flood into this one-off subject could fill it,
	// and nobody but the owner learns the subject.
	ch := make(chan *nats.Msg, answerQueue)
	sub, err := nc.ChanSubscribe(reply, ch)
	if err != nil {
		return peer.AddrInfo{}, fmt.Errorf("files: listening for the owner's answer: %w", err)
	}
	defer sub.Unsubscribe()
	if err := nc.PublishMsg(&nats.Msg{Subject: SignalSubjectPrefix + owner.String(), Reply: reply, Data: body}); err != nil {
		return peer.AddrInfo{}, fmt.Errorf("files: asking the owner where they listen: %w", err)
	}
	timer := time.NewTimer(o.Timeout)
	defer timer.Stop()
	for {
		var m *nats.Msg
		select {
		case <-ctx.Done():
			return peer.AddrInfo{}, ctx.Err()
		case <-timer.C:
			return peer.AddrInfo{}, errNoAnswer
		case m = <-ch:
		}
		if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
			return peer.AddrInfo{}, errNoAnswer // no responders: nobody listens on the owner's subject
		}
		a, err := ParseLocateAnswer(m.Data)
		if err != nil {
			continue // junk: anyone may publish into _INBOX.<me>.>
		}
		if err := a.Verify(owner, me, req.Nonce, o.Now()); err != nil {
			continue
		}
		return peer.AddrInfo{ID: owner.PeerID(), Addrs: a.Addrs}, nil
	}
}

// AnswerOptions adjust [AnswerLocates].
type AnswerOptions struct {
	// Logger receives requests that were ignored (debug) and answers that
	// failed (warn); nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// AnswerLocates answers the locate requests for signer's key that arrive on
// nc (subject [SignalSubjectPrefix] + key) with the addresses addrs returns
// at that moment, until the returned subscription is unsubscribed or nc
// closes. Requests that are malformed, for another key, older or newer
// than [MaxSignalSkew], or whose reply subject is not under the
// requester's own inbox (_INBOX.<requester>.) are ignored.
func AnswerLocates(nc *nats.Conn, signer kez.Signer, addrs func() []ma.Multiaddr, o AnswerOptions) (*nats.Subscription, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := o.Now
	if now == nil {
		now = time.Now
	}
	me := signer.PublicKey()
	return nc.Subscribe(SignalSubjectPrefix+me.String(), func(m *nats.Msg) {
		req, err := ParseLocateRequest(m.Data)
		if err != nil {
			log.Debug("files: ignoring a malformed locate request", "err", err)
			return
		}
		t := now()
		switch d := req.Time.Sub(t); {
		case req.Owner != me:
			log.Debug("files: ignoring a locate request for another key", "owner", req.Owner)
			return
		case !strings.HasPrefix(m.Reply, wire.ReplyInbox(req.Requester.String())+"."):
			log.Debug("files: ignoring a locate request whose reply subject is not the requester's", "requester", req.Requester, "reply", m.Reply)
			return
		case d > MaxSignalSkew || d < -MaxSignalSkew:
			log.Debug("files: ignoring a stale locate request", "requester", req.Requester, "skew", d)
			return
		}
		list := AnnounceAddrs(addrs())
		if len(list) == 0 {
			log.Warn("files: no address to announce; is the node listening?")
			return
		}
		ans, err := SignLocateAnswer(signer, req, list, t)
		if err != nil {
			log.Warn("files: answering a locate request", "err", err)
			return
		}
		if err := m.Respond(ans); err != nil {
			log.Warn("files: answering a locate request", "requester", req.Requester, "err", err)
		}
	})
}

// AnnounceAddrs picks the addresses an owner announces from its node's
// addresses with [addrs.Order]: no unspecified (0.0.0.0, ::) addresses and
// only those [addrs.Check] accepts (no /p2p but a circuit address's
// relay, at most [MaxLocateAddrLen] bytes), public direct ones first, then
// private, loopback and circuit addresses, at most [MaxLocateAddrs].
func AnnounceAddrs(all []ma.Multiaddr) []ma.Multiaddr {
	return addrs.Order(all)
}
