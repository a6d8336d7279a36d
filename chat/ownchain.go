package chat

// The user's own chain, pinned (docs/spec/chat.md §8.7). A contact's chain
// is pinned and every later fetch of it must extend the pin; so is the
// user's own: the newest state of it this install verified or appended
// is kept in chat.db, link by link, and a sig-server that serves an older
// prefix of it (rollback) or a different history (fork) is not believed.
// The pinned state is kept: its devices are those sent to (never one it
// shows revoked), nothing is appended to the chain (no rotation, no
// revocation) until a fetch extends the pin again.

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// ErrOwnChainRewritten reports that the user's sig-server served an older
// or a different history of the user's own chain than the one this
// install verified or appended before (sigchain.ErrRollback,
// sigchain.ErrFork). It is returned as an *[OwnChainRewrittenError].
var ErrOwnChainRewritten = errors.New("chat: your sig-server served an older or a different history of your own chain")

// OwnChainRewrittenError is [ErrOwnChainRewritten] with the details.
type OwnChainRewrittenError struct {
	Pinned sigchain.Pin // the head this install verified or appended
	Err    error        // sigchain.ErrRollback or sigchain.ErrFork, with the server's details
}

// Error names the pinned head and what the server showed.
func (e *OwnChainRewrittenError) Error() string {
	return fmt.Sprintf("%v (pinned seqno %d %s): %v", ErrOwnChainRewritten, e.Pinned.Seqno, e.Pinned.Head, e.Err)
}

// Is matches [ErrOwnChainRewritten].
func (e *OwnChainRewrittenError) Is(target error) bool { return target == ErrOwnChainRewritten }

// Unwrap returns the sigchain error (ErrRollback or ErrFork).
func (e *OwnChainRewrittenError) Unwrap() error { return e.Err }

// ownPin serialises the fetches of the user's chain and the appends to it,
// so that the pin only moves along verified extensions of itself.
// It is held across requests to the sig-server (an append may take
// several), so a waiter gives up when its context ends: the receive path
// checks a new device of the user's within RefreshTimeout.
type ownPin struct {
	once sync.Once
	sem  chan struct{} // holds a token while the pin is held
	err  error         // the last fetch found a rollback or fork; nil once one extends the pin
}

// lock takes the pin, or returns ctx's error if it ends first.
func (p *ownPin) lock(ctx context.Context) error {
	p.once.Do(func() { p.sem = make(chan struct{}, 1) })
	select {
	case p.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// unlock releases the pin lock took.
func (p *ownPin) unlock() { <-p.sem }

// loadOwnChain rebuilds the pinned state of the user's chain from
// own_chain_links, if any.
func (c *Client) loadOwnChain(ctx context.Context) error {
	st, err := c.db.ownChain(ctx, c.me)
	if err != nil || st == nil {
		return err
	}
	ds := &c.devs
	ds.mu.Lock()
	ds.own, ds.ownDevs = st, chainDevices(st)
	ds.mu.Unlock()
	return nil
}

// ownChain rebuilds the user's chain as pinned in own_chain_links (nil:
// nothing pinned yet); me is the person's key.
func (s *store) ownChain(ctx context.Context, me kez.PublicKey) (*sigchain.State, error) {
	st, err := s.storedChain(ctx, `SELECT link FROM own_chain_links ORDER BY seqno`)
	if err != nil {
		return nil, fmt.Errorf("chat: your stored chain: %w", err)
	}
	if st == nil {
		return nil, nil
	}
	if st.Key() != me {
		// The state folder was given another identity ("kez init
		// --force"): its chain is pinned anew.
		err := s.write(ctx, func(tx *sql.Tx) error {
			_, err := tx.Exec(`DELETE FROM own_chain_links`)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("chat: database: %w", err)
		}
		return nil, nil
	}
	return st, nil
}

// storedChain rebuilds a chain stored link by link (the link column of
// query's rows, in seqno order); nil if there are none. The links were
// verified when stored: their times are not checked again.
func (s *store) storedChain(ctx context.Context, query string, args ...any) (*sigchain.State, error) {
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("chat: database: %w", err)
	}
	defer rows.Close()
	var links []*sigchain.Link
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			return nil, fmt.Errorf("chat: database: %w", err)
		}
		l, err := sigchain.ParseLink(b)
		if err != nil {
			return nil, fmt.Errorf("damaged: %w", err)
		}
		links = append(links, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("chat: database: %w", err)
	}
	if len(links) == 0 {
		return nil, nil
	}
	st, err := sigchain.Verify(links, sigchain.WithMaxFuture(1<<62))
	if err != nil {
		return nil, fmt.Errorf("it does not verify: %w", err)
	}
	return st, nil
}

// putOwnLinks stores links of the user's chain that extend the pinned
// one (or are the whole chain, when none is pinned). Another writer of
// the same database (files' FetchOwnChain) may have stored some already:
// the same link is kept, another one at a seqno is a fork.
func (s *store) putOwnLinks(ctx context.Context, links []*sigchain.Link) error {
	if len(links) == 0 {
		return nil
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		for _, l := range links {
			if _, err := tx.Exec(`INSERT INTO own_chain_links (seqno, link) VALUES (?, ?) ON CONFLICT (seqno) DO NOTHING`, int64(l.Seqno()), l.Bytes()); err != nil {
				return fmt.Errorf("chat: database: %w", err)
			}
			var b []byte
			if err := tx.QueryRow(`SELECT link FROM own_chain_links WHERE seqno = ?`, int64(l.Seqno())).Scan(&b); err != nil {
				return fmt.Errorf("chat: database: %w", err)
			}
			if !bytes.Equal(b, l.Bytes()) {
				stored, err := sigchain.ParseLink(b)
				if err != nil {
					return fmt.Errorf("chat: your stored chain is damaged: %w", err)
				}
				return &OwnChainRewrittenError{Pinned: sigchain.Pin{Key: stored.Key(), Seqno: stored.Seqno(), Head: stored.ID()},
					Err: fmt.Errorf("%w: at seqno %d the server shows %s, %s is pinned", sigchain.ErrFork, l.Seqno(), l.ID(), stored.ID())}
			}
		}
		return nil
	})
}

// checkOwnChain fetches me's chain from sc and checks it against pinned
// (nil: nothing pinned): it returns the chain and the links to record, or
// an *OwnChainRewrittenError for a rollback or fork.
func checkOwnChain(ctx context.Context, sc *sigchain.Client, me kez.PublicKey, pinned *sigchain.State, opts []sigchain.VerifyOption) (*sigchain.State, []*sigchain.Link, error) {
	var since uint64
	if pinned != nil {
		since = pinned.Seqno() - 1
	}
	links, err := sc.Fetch(ctx, me, since)
	switch {
	case pinned == nil && err != nil:
		return nil, nil, err
	case pinned == nil:
		st, err := sigchain.Verify(links, opts...)
		if err != nil {
			return nil, nil, err
		}
		if st.Key() != me {
			return nil, nil, fmt.Errorf("%w: asked for the chain of %s, got the chain of %s", sigchain.ErrWrongKey, me, st.Key())
		}
		return st, links, nil
	case errors.Is(err, sigchain.ErrNotFound):
		err = fmt.Errorf("%w: the sig-server has no chain, the pinned head is seqno %d", sigchain.ErrRollback, pinned.Seqno())
	case err != nil:
		return nil, nil, err
	default:
		err = sigchain.CheckAgainst(pinned.Pin(), links)
	}
	if errors.Is(err, sigchain.ErrRollback) || errors.Is(err, sigchain.ErrFork) {
		return nil, nil, &OwnChainRewrittenError{Pinned: pinned.Pin(), Err: err}
	}
	if err != nil {
		return nil, nil, err
	}
	st, err := pinned.Extend(links, opts...)
	if err != nil {
		return nil, nil, err
	}
	return st, links[pinned.Seqno()-links[0].Seqno()+1:], nil
}

// pinnedOwnChain returns the user's chain as pinned here (nil: none yet).
func (c *Client) pinnedOwnChain() *sigchain.State {
	c.devs.mu.Lock()
	defer c.devs.mu.Unlock()
	return c.devs.own
}

// fetchOwnChain fetches the user's chain and checks it against the pin:
// it must extend it. The links it adds are recorded (the pin moves on);
// a rollback or fork is an *OwnChainRewrittenError, logged, and the pin
// is kept.
func (c *Client) fetchOwnChain(ctx context.Context) (*sigchain.State, error) {
	if err := c.ownPin.lock(ctx); err != nil {
		return nil, err
	}
	defer c.ownPin.unlock()
	return c.fetchOwnLocked(ctx)
}

// fetchOwnLocked is fetchOwnChain with c.ownPin held.
func (c *Client) fetchOwnLocked(ctx context.Context) (*sigchain.State, error) {
	fctx, cancel := context.WithTimeout(ctx, c.cfg.RefreshTimeout)
	defer cancel()
	st, links, err := checkOwnChain(fctx, c.sig, c.me, c.pinnedOwnChain(), c.verifyOpts())
	if errors.Is(err, ErrOwnChainRewritten) {
		c.ownPin.err = err
		c.log.Warn("your sig-server served an older or a different history of your own chain; keeping the one verified here, appending nothing and sending nothing to the devices it does not list as current", "err", err)
		return nil, err
	}
	if err != nil {
		c.noteSplit(ctx, err, nil)
		return nil, err
	}
	c.ownPin.err = nil
	if err := c.recordOwnChain(ctx, st, links); err != nil {
		return nil, err
	}
	return st, nil
}

// recordOwnChain stores links, which extend the pinned chain (or are the
// whole chain) to st, and makes st the user's chain (c.ownPin held).
func (c *Client) recordOwnChain(ctx context.Context, st *sigchain.State, links []*sigchain.Link) error {
	if err := c.db.putOwnLinks(ctx, links); err != nil {
		return err
	}
	c.setOwnChain(ctx, st)
	return nil
}

// OwnChain fetches the user's chain from their sig-server now, checks it
// against the one this install pinned (it must extend it: else an
// *[OwnChainRewrittenError], and the pin is kept), records it, and
// returns it. Sessions with devices it shows revoked are deleted.
func (c *Client) OwnChain(ctx context.Context) (*sigchain.State, error) {
	if c.cc.SigServerURL == "" {
		return nil, errNoSigServer
	}
	return c.fetchOwnChain(ctx)
}

// errNoSigServer: the client was opened without a sig-server.
var errNoSigServer = errors.New("chat: no sig-server to fetch your chain from")

// FetchOwnChain is [Client.OwnChain] for a program that does not open a
// Client (files.Config.OwnChain): it fetches the chain of cfg's person
// from cfg.SigServerURL, checks it against the one pinned in the chat
// database of cfg.Home (creating it if needed), records what it adds, and
// returns it; a rollback or fork is an *[OwnChainRewrittenError] and
// leaves the pin as it was. With cfg.Log set, the chain's head must be
// in the sig-server's log (sigchain.Client.Log).
func FetchOwnChain(ctx context.Context, cfg client.Config) (*sigchain.State, error) {
	if cfg.SigServerURL == "" {
		return nil, errNoSigServer
	}
	if err := os.MkdirAll(cfg.Home, 0o700); err != nil {
		return nil, fmt.Errorf("chat: making the state folder: %w", err)
	}
	db, err := openStore(filepath.Join(cfg.Home, DBFileName))
	if err != nil {
		return nil, err
	}
	defer db.close()
	me := cfg.PersonKey()
	pinned, err := db.ownChain(ctx, me)
	if err != nil {
		return nil, err
	}
	now := cfg.Clock
	if now == nil {
		now = time.Now
	}
	sc := &sigchain.Client{BaseURL: cfg.SigServerURL, HTTPClient: cfg.HTTPClient, Log: cfg.Log}
	fctx, cancel := context.WithTimeout(ctx, DefaultRefreshTimeout)
	defer cancel()
	st, links, err := checkOwnChain(fctx, sc, me, pinned, []sigchain.VerifyOption{sigchain.WithClock(now)})
	if err != nil {
		return nil, err
	}
	if err := db.putOwnLinks(ctx, links); err != nil {
		return nil, err
	}
	return st, nil
}
