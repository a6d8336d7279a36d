package bench

import (
	"context"
	"crypto/sha512"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// User is a user the bench registered.
type User struct {
	Name     string
	Identity *kez.Identity
	Key      kez.PublicKey
}

// benchIdentity returns the deterministic identity of a bench user, so a
// run against an external stack reuses the registrations of earlier runs.
func benchIdentity(name string) (*kez.Identity, error) {
	seed := sha512.Sum512([]byte("kez-bench user " + name))
	return kez.FromSeed(seed[:])
}

// Register registers users named prefix+"0", prefix+"1", … (n of them) the
// way "kez register" does, through the servers' APIs: the eldest sigchain
// link appended at the sig-server, then the handle claimed at the
// chat-server (which fetches and verifies the chain). workers
// registrations run at once. A user already registered (an external stack
// from an earlier run) is kept as it is.
func (s *Stack) Register(ctx context.Context, prefix string, n, workers int) ([]*User, error) {
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	sigc := &sigchain.Client{BaseURL: s.SigServerURL, HTTPClient: hc}
	hands := &handles.Client{BaseURL: s.ServerURL, HTTPClient: hc}
	users := make([]*User, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				u, err := s.register(ctx, sigc, hands, fmt.Sprintf("%s%d", prefix, i))
				if err != nil {
					errs[w] = err
					return
				}
				users[i] = u
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return users, nil
}

func (s *Stack) register(ctx context.Context, sigc *sigchain.Client, hands *handles.Client, name string) (*User, error) {
	id, err := benchIdentity(name)
	if err != nil {
		return nil, err
	}
	h := handles.Handle{Name: name, Domain: s.Domain}
	u := &User{Name: name, Identity: id, Key: id.PublicKey()}
	link, err := sigchain.NewLink(id, nil, sigchain.TypeEldest,
		sigchain.EldestBody(u.Key, id.EncryptionKey(0).PublicKey(), 0, h.String()), time.Now())
	if err != nil {
		return nil, err
	}
	if err := sigc.Append(ctx, link); err != nil {
		// Registered by an earlier run: the chain exists (the head moved).
		if !errors.Is(err, sigchain.ErrConflict) {
			return nil, fmt.Errorf("bench: appending the eldest link of %s: %w", h, err)
		}
	}
	if _, _, err := hands.Claim(ctx, id, h); err != nil {
		return nil, fmt.Errorf("bench: claiming %s: %w", h, err)
	}
	return u, nil
}
