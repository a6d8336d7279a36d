package chat

// The chains of keys that are not contacts (a bot answering a request, a
// stranger whose handle is looked up): fetched from the user's sig-server
// and verified once, then kept for the refresh interval and brought up to
// date from their head, never fetched whole again on every send.

import (
	"context"
	"sync"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// maxKeyChains bounds the chains kept for keys that are not contacts.
const maxKeyChains = 4096

// keyChains caches verified chains of keys that are not contacts.
type keyChains struct {
	mu     sync.Mutex
	chains map[kez.PublicKey]keyChain
}

type keyChain struct {
	st      *sigchain.State
	checked time.Time
}

// keyChain returns the verified chain of key from the user's sig-server:
// the cached one while it was checked less than the refresh interval ago,
// else the cached one brought up to date (only the links from its head on
// are fetched), else the whole chain. A sig-server that shows a chain
// forking from or shorter than the cached one gives ErrFork or
// ErrRollback, and the chain is fetched whole next time.
func (c *Client) keyChain(ctx context.Context, key kez.PublicKey) (*sigchain.State, error) {
	now := c.now()
	kc := &c.keyChains
	kc.mu.Lock()
	e, ok := kc.chains[key]
	kc.mu.Unlock()
	if ok && now.Sub(e.checked) < c.cfg.RefreshInterval {
		return e.st, nil
	}
	st, err := c.sig.FetchVerified(ctx, key, e.st)
	kc.mu.Lock()
	defer kc.mu.Unlock()
	if err != nil {
		if ok {
			delete(kc.chains, key)
		}
		return nil, err
	}
	if kc.chains == nil || len(kc.chains) >= maxKeyChains {
		kc.chains = make(map[kez.PublicKey]keyChain)
	}
	if cur, ok := kc.chains[key]; !ok || cur.st.Seqno() <= st.Seqno() {
		kc.chains[key] = keyChain{st: st, checked: now}
	}
	return st, nil
}
