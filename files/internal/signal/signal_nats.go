package signal

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"time"

	"github.com/ipfs/go-cid"
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
	var info peer.AddrInfo
	err = exchange(ctx, nc, me, owner, req.Nonce, body, o.Timeout, "p2p", func(b []byte) bool {
		a, err := ParseLocateAnswer(b)
		if err != nil || a.Verify(owner, me, req.Nonce, o.Now()) != nil {
			return false
		}
		info = peer.AddrInfo{ID: owner.PeerID(), Addrs: a.Addrs}
		return true
	})
	return info, err
}

// exchange publishes body to owner's subject with a fresh reply subject
// under me's inbox (_INBOX.<me>.<tag><hex of nonce>) and reads what comes
// back until accept takes a message: anything else is ignored, as anyone
// may publish into _INBOX.<me>.>. A cookie reply to this request (§7)
// makes it publish body again with the cookie, once. It returns
// errNoAnswer after timeout or if nobody listens on owner's subject.
func exchange(ctx context.Context, nc *nats.Conn, me, owner kez.PublicKey, nonce [locateNonceLen]byte, body []byte, timeout time.Duration, tag string, accept func([]byte) bool) error {
	reply := wire.ReplyInbox(me.String()) + "." + tag + hex.EncodeToString(nonce[:])
	// A small channel of our own: SubscribeSync would allocate a 64 Ki-slot
	// one per request. Only a flood into this one-off subject could fill it,
	// and nobody but the owner learns the subject.
	ch := make(chan *nats.Msg, answerQueue)
	sub, err := nc.ChanSubscribe(reply, ch)
	if err != nil {
		return fmt.Errorf("files: listening for the owner's answer: %w", err)
	}
	defer sub.Unsubscribe()
	if err := nc.PublishMsg(&nats.Msg{Subject: SignalSubjectPrefix + owner.String(), Reply: reply, Data: body}); err != nil {
		return fmt.Errorf("files: asking the owner: %w", err)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	cookied := false
	for {
		var m *nats.Msg
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			return errNoAnswer
		case m = <-ch:
		}
		if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
			return errNoAnswer // no responders: nobody listens on the owner's subject
		}
		if c, err := ParseCookieReply(m.Data); err == nil {
			// A busy owner's cookie (§7): the same request again, with
			// it, at once; once per request.
			if !cookied && c.Owner == owner && c.Requester == me && c.Nonce == nonce && c.Kind == body[5] {
				cookied = true
				again := append(bytes.Clone(body), c.Cookie[:]...)
				if err := nc.PublishMsg(&nats.Msg{Subject: SignalSubjectPrefix + owner.String(), Reply: reply, Data: again}); err != nil {
					return fmt.Errorf("files: asking the owner: %w", err)
				}
			}
			continue
		}
		if accept(m.Data) {
			return nil
		}
	}
}

// AnswerOptions adjust [AnswerLocates].
type AnswerOptions struct {
	// Logger receives requests that were ignored (debug) and answers that
	// failed (warn); nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Holders, if set, answers holders requests (§6): it returns the
	// haves kept for a blob, at most MaxHolders, as they came. nil: holders
	// requests are ignored.
	Holders func(c cid.Cid) [][]byte
	// OnHave, if set, receives each have sent to this key: verified
	// (signature, owner, freshness) with err nil, or with the reason it
	// was refused (h nil if it did not parse). nil: haves are ignored.
	OnHave func(h *Have, err error)
	// Budget bounds the answers signed and haves checked (§7); the zero
	// value means the defaults (50 answers/s, burst 100; 5/s, burst 10 per
	// requester key with a cookie).
	Budget AnswerBudget
	// Counters, if set, counts what was answered, cookied and dropped.
	Counters *AnswerCounters
}

// AnswerLocates answers the locate requests for signer's key that arrive on
// nc (subject [SignalSubjectPrefix] + key) with the addresses addrs returns
// at that moment, until the returned subscription is unsubscribed or nc
// closes. Requests that are malformed, for another key, older or newer
// than [MaxSignalSkew], or whose reply subject is not under the
// requester's own inbox (_INBOX.<requester>.) are ignored. The same
// subject carries haves and holders requests (§6), handed to o.OnHave and
// answered from o.Holders.
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
	g := newGate(o.Budget, o.Counters, now())
	return nc.Subscribe(SignalSubjectPrefix+me.String(), func(m *nats.Msg) {
		if len(m.Data) > 5 && m.Data[5] != kindLocate {
			answerHolders(m, signer, o, g, log, now)
			return
		}
		req, err := ParseLocateRequest(m.Data)
		if err != nil {
			g.drop()
			log.Debug("files: ignoring a malformed locate request", "err", err)
			return
		}
		t := now()
		if why := refusal(me, req.Owner, req.Requester, req.Time, t, m.Reply); why != "" {
			g.drop()
			log.Debug("files: ignoring a locate request "+why, "requester", req.Requester)
			return
		}
		if !g.admit(m, kindLocate, req.Owner, req.Requester, req.Nonce, req.Cookie, t, log) {
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
