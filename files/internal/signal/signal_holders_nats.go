package signal

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/kez"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/nats-io/nats.go"
)

// Holders timings (docs/spec/signalling.md §6).
const (
	// DefaultHoldersTimeout is how long a fetcher waits for the owner's
	// holders answer.
	DefaultHoldersTimeout = time.Second
	// HaveLife is how long an owner keeps a have, and how old a record a
	// fetcher accepts.
	HaveLife = 30 * time.Minute
	// HaveInterval is how often a holder sends its haves again while it
	// serves.
	HaveInterval = 10 * time.Minute
)

// SendHave signs a have for blob c, made for owner (the owner's serving
// device) by signer (the holder's device key) with the holder's node
// addresses, and publishes it on owner's subject. There is no reply.
func SendHave(nc *nats.Conn, signer kez.Signer, owner kez.PublicKey, c cid.Cid, addrs []ma.Multiaddr, now time.Time) error {
	h := &Have{Owner: owner, Holder: signer.PublicKey(), Time: now, CID: c, Addrs: AnnounceAddrs(addrs)}
	if _, err := rand.Read(h.Nonce[:]); err != nil {
		return fmt.Errorf("files: reading randomness: %w", err)
	}
	b, err := SignHave(signer, h)
	if err != nil {
		return err
	}
	if err := nc.Publish(SignalSubjectPrefix+owner.String(), b); err != nil {
		return fmt.Errorf("files: telling the owner this node holds %s: %w", c, err)
	}
	return nil
}

// HoldersOptions adjust [AskHolders].
type HoldersOptions struct {
	// Timeout bounds the wait for the answer; 0 means
	// DefaultHoldersTimeout.
	Timeout time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// AskHolders asks owner's client (the serving device) for the holders of
// blob c over nc, logged in as me, and returns the records of its signed
// answer that pass [CheckHolder]; the others are dropped. An owner that
// does not answer in time (an older client, say) gives no holders and no
// error: holders are an extra.
func AskHolders(ctx context.Context, nc *nats.Conn, me, owner kez.PublicKey, c cid.Cid, o HoldersOptions) ([]*Have, error) {
	if o.Timeout <= 0 {
		o.Timeout = DefaultHoldersTimeout
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	req := HoldersRequest{Owner: owner, Requester: me, Time: o.Now(), CID: c}
	if _, err := rand.Read(req.Nonce[:]); err != nil {
		return nil, fmt.Errorf("files: reading randomness: %w", err)
	}
	body, err := req.Marshal()
	if err != nil {
		return nil, err
	}
	var out []*Have
	err = exchange(ctx, nc, me, owner, req.Nonce, body, o.Timeout, "p2ph", func(b []byte) bool {
		a, err := ParseHoldersAnswer(b)
		if err != nil || a.Verify(owner, me, req.Nonce, o.Now()) != nil {
			return false
		}
		seen := map[kez.PublicKey]bool{}
		for _, h := range a.Records {
			if seen[h.Holder] || CheckHolder(h, owner, me, c, o.Now(), HaveLife+MaxSignalSkew) != nil {
				continue
			}
			seen[h.Holder] = true
			out = append(out, h)
		}
		return true
	})
	if errors.Is(err, errNoAnswer) {
		return nil, nil
	}
	return out, err
}

// answerHolders handles a message of another kind than a locate request
// on the owner's subject: a have (kind 3) goes to o.OnHave, a holders
// request (kind 4) is answered from o.Holders; anything else is ignored.
func answerHolders(m *nats.Msg, signer kez.Signer, o AnswerOptions, g *gate, log *slog.Logger, now func() time.Time) {
	me := signer.PublicKey()
	switch m.Data[5] {
	case kindHave:
		if o.OnHave == nil {
			g.drop()
			return
		}
		if !g.have(now()) {
			log.Debug("files: dropping a have over the answer budget")
			return
		}
		h, err := ParseHave(m.Data)
		switch {
		case err != nil:
		case h.Owner != me:
			err = fmt.Errorf("%w: a have for another key", ErrSignal)
		default:
			err = h.Verify(now(), MaxSignalSkew)
		}
		if err != nil {
			o.OnHave(nil, err)
			return
		}
		o.OnHave(h, nil)
	case kindHoldersRequest:
		if o.Holders == nil {
			g.drop()
			return
		}
		req, err := ParseHoldersRequest(m.Data)
		if err != nil {
			g.drop()
			log.Debug("files: ignoring a malformed holders request", "err", err)
			return
		}
		t := now()
		if why := refusal(me, req.Owner, req.Requester, req.Time, t, m.Reply); why != "" {
			g.drop()
			log.Debug("files: ignoring a holders request "+why, "requester", req.Requester)
			return
		}
		if !g.admit(m, kindHoldersRequest, req.Owner, req.Requester, req.Nonce, req.Cookie, t, log) {
			return
		}
		ans, err := SignHoldersAnswer(signer, req, o.Holders(req.CID), t)
		if err != nil {
			log.Warn("files: answering a holders request", "err", err)
			return
		}
		if err := m.Respond(ans); err != nil {
			log.Warn("files: answering a holders request", "requester", req.Requester, "err", err)
		}
	default:
		g.drop()
		log.Debug("files: ignoring a signalling message of unknown kind", "kind", m.Data[5])
	}
}

// refusal says why an owner me ignores a request for owner from
// requester made at reqTime, with reply subject reply, at time now; ""
// means answer it. An answer goes only under the requester's own inbox
// (_INBOX.<requester>.), so the owner cannot be used to send answers into
// a third party's inbox.
func refusal(me, owner, requester kez.PublicKey, reqTime, now time.Time, reply string) string {
	switch d := reqTime.Sub(now); {
	case owner != me:
		return "for another key"
	case !strings.HasPrefix(reply, wire.ReplyInbox(requester.String())+"."):
		return "whose reply subject is not the requester's"
	case d > MaxSignalSkew || d < -MaxSignalSkew:
		return "that is stale"
	}
	return ""
}
