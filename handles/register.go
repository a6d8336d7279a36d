package handles

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// RegisterOptions name the servers [Register] talks to.
type RegisterOptions struct {
	// ServerURL is the chat-server's base URL, whose registry gets the
	// claim (KEZ_SERVER). Required.
	ServerURL string
	// SigServerURL is the sig-server's base URL, which keeps the key's
	// sigchain (KEZ_SIG_SERVER). Required.
	SigServerURL string
	// HTTPClient is used for every request; nil means http.DefaultClient.
	HTTPClient *http.Client
	// Now dates the link and the claim; nil means time.Now.
	Now func() time.Time
}

// Registration is what [Register] did.
type Registration struct {
	Handle Handle
	// Record is the registry's record of Handle (nil when Register failed
	// before or at the claim).
	Record *LookupRecord
	// Created is true when the registry made a new entry; false when the
	// key already held Handle.
	Created bool
	// Chain is the key's verified sigchain as Register left it: naming
	// Handle after a success. Nil if the chain could not be read.
	Chain *sigchain.State
	// Appended is the link Register appended to name Handle (the eldest
	// link, or a set_handle link on a chain that named no handle); nil if
	// the chain named Handle already.
	Appended *sigchain.Link
}

// Register gives id the handle h, as "kez register NAME" does: it makes
// the key's sigchain at opts.SigServerURL name h, then claims h at the
// registry at opts.ServerURL with a signature of the key.
//
//   - A reserved or invalid h is refused with a *[HandleError] before
//     anything is sent.
//   - A name the registry says is held by another key (or suspended) is
//     refused before the chain is touched: a *[TakenError] (or an error
//     matching [ErrSuspended]).
//   - Without a chain, the eldest link is appended (the key, generation 0
//     of its X25519 encryption key, and h); on a chain that names no handle,
//     a set_handle link; on a chain that names h, nothing. A chain naming
//     another handle is an error matching [ErrKeyHasHandle]: a key holds
//     one handle, and Register does not change it.
//   - If the registry then refuses the claim as taken (a look-alike of a
//     taken name: the first check compares exact names only; the error
//     wraps a *[TakenError] naming the handle held), the link
//     just appended is undone with a set_handle link naming no handle, so
//     the chain does not claim a name its key does not hold. If that fails
//     too, the error says so and Registration.Chain still names h.
//
// A server that refuses because the address or key sent too many
// requests gives an error matching [ErrRateLimited], a *[RateLimitedError]
// with the wait; registering again after it is safe (a link already
// appended is not appended twice).
//
// Running it again after a success changes nothing (Created is false).
// A chain that moved while registering (another device) gives an error
// matching [sigchain.ErrConflict]; registering again is safe. Registration
// is non-nil, also with an error, once the chain was read. Register is safe
// for concurrent use with different identities.
func Register(ctx context.Context, id *kez.Identity, h Handle, opts RegisterOptions) (*Registration, error) {
	if err := CheckClaimable(h); err != nil {
		return nil, err
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	key := id.PublicKey()
	reg := &Client{BaseURL: opts.ServerURL, HTTPClient: opts.HTTPClient, Now: now}
	sc := &sigchain.Client{BaseURL: opts.SigServerURL, HTTPClient: opts.HTTPClient}

	// Refuse a name held by another key before anything is written.
	rec, err := reg.Lookup(ctx, h.String())
	switch {
	case err == nil && rec.Key != key.String():
		return nil, taken(h, h)
	case err != nil && !errors.Is(err, ErrNotFound):
		return nil, fmt.Errorf("handles: checking whether %s is free: %w", h, err)
	}

	st, err := sc.FetchVerified(ctx, key, nil)
	var link *sigchain.Link
	switch {
	case errors.Is(err, sigchain.ErrNotFound):
		st = nil
		link, err = sigchain.NewLink(id, nil, sigchain.TypeEldest,
			sigchain.EldestBody(key, id.EncryptionKey(0).PublicKey(), 0, h.String()), now())
	case err != nil:
		return nil, fmt.Errorf("handles: reading the sigchain at %s: %w", opts.SigServerURL, err)
	case st.Handle() == h.String():
	case st.Handle() != "":
		return &Registration{Handle: h, Chain: st}, fmt.Errorf("%w: the key's sigchain already names %s as its handle", ErrKeyHasHandle, st.Handle())
	default:
		link, err = sigchain.NewLink(id, st, sigchain.TypeSetHandle, sigchain.SetHandleBody(h.String()), now())
	}
	if err != nil {
		return &Registration{Handle: h, Chain: st}, fmt.Errorf("handles: building the sigchain link: %w", err)
	}
	r := &Registration{Handle: h, Chain: st}
	if link != nil {
		next, err := appendLink(ctx, sc, st, link)
		if err != nil {
			return r, err
		}
		r.Chain, r.Appended = next, link
	}

	rec, created, err := reg.Claim(ctx, id, h)
	if err != nil {
		err = fmt.Errorf("handles: claiming %s at %s: %w", h, opts.ServerURL, err)
		if errors.Is(err, ErrTaken) && r.Appended != nil {
			undo, lerr := sigchain.NewLink(id, r.Chain, sigchain.TypeSetHandle, sigchain.SetHandleBody(""), now())
			if lerr == nil {
				var next *sigchain.State
				if next, lerr = appendLink(ctx, sc, r.Chain, undo); lerr == nil {
					r.Chain = next
				}
			}
			if lerr != nil {
				return r, fmt.Errorf("%w; and the sigchain still names %s, since giving it up failed: %w", err, h, lerr)
			}
		}
		return r, err
	}
	r.Record, r.Created = rec, created
	return r, nil
}

// appendLink sends link, which follows st (nil for the eldest), and
// returns the chain's new state.
func appendLink(ctx context.Context, sc *sigchain.Client, st *sigchain.State, link *sigchain.Link) (*sigchain.State, error) {
	if err := sc.Append(ctx, link); err != nil {
		if errors.Is(err, sigchain.ErrConflict) {
			return nil, fmt.Errorf("handles: the key's sigchain changed while registering (another device?): %w", err)
		}
		return nil, fmt.Errorf("handles: appending to the sigchain at %s: %w", sc.BaseURL, err)
	}
	next, err := st.Extend([]*sigchain.Link{link})
	if err != nil {
		return nil, fmt.Errorf("handles: the new sigchain link does not verify: %w", err)
	}
	return next, nil
}
