package sigchain

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/kez-lat/kez-chat/internal/httpjson"
	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/session"
)

// PrekeysPath is the prefix of the prekey directory's routes: a key's
// signed prekey record is at PrekeysPath + key.
const PrekeysPath = wire.PrekeysPath

// MaxPrekeySize bounds the body of a prekey PUT; a record
// ([session.PrekeyRecordSize] bytes) fits with room for a later version.
const MaxPrekeySize = 2048

// MaxPrekeyLifetime is the longest validity (Expires − Created) of a
// record the sig-server stores, so that a stolen device's old prekey
// cannot be published to last for years.
const MaxPrekeyLifetime = 60 * 24 * time.Hour

// ErrNoPrekey reports a key for which the sig-server holds no prekey
// record (404 to a prekey GET).
var ErrNoPrekey = errors.New("sigchain: no prekey for this key")

// ErrStalePrekey reports a prekey record the sig-server refused because
// the one it holds was made at the same time or later: records never go
// back (409 to a prekey PUT, reason [ReasonPrekeyNotNewer]).
var ErrStalePrekey = errors.New("sigchain: the sig-server holds a prekey at least as new")

// Reasons in the "reason" field of the prekey directory's refusals.
const (
	ReasonPrekeyNotNewer = "prekey_not_newer" // 409: the stored record is at least as new
	ReasonNoPrekey       = "no_prekey"        // 404 to a GET: no record for the key
	ReasonNoChain        = "no_chain"         // 404 to a PUT: this server has no chain for the key
)

// PrekeyStore keeps one signed prekey record per key: the prekey
// directory of the sig-server. A [Store] that also implements it has
// [NewHandler] serve the directory. Implementations never verify a
// record (the handler does) but must make PutPrekey's checks atomic.
type PrekeyStore interface {
	// Prekey returns the stored record of key, or [ErrNoPrekey].
	Prekey(ctx context.Context, key kez.PublicKey) ([]byte, error)
	// PutPrekey stores p (as [session.Prekey.MarshalBinary]) as the
	// record of p.Owner, replacing the stored one, if atomically p is
	// newer (p.Created later than the stored record's Created); else it
	// stores nothing and returns [ErrStalePrekey]. It returns
	// [ErrNotFound], storing nothing, when the store holds no chain for
	// p.Owner (atomically where the store can); a [DeviceStore] also
	// takes a current device of a stored chain, and returns
	// [ErrDeviceRevoked] for a revoked one.
	PutPrekey(ctx context.Context, p *session.Prekey) error
}

type counter = atomic.Uint64

// now is the handler's clock for verifying records ([WithClock] among
// its verify options, else time.Now).
func (h *Handler) now() time.Time { return newConfig(h.verify).now() }

// prekeyCounters count the prekey directory's outcomes, for metrics.
type prekeyCounters struct {
	stored, malformed, invalid, notNewer, noChain, revoked counter
}

// PrekeyStats are the prekey directory's counters.
type PrekeyStats struct {
	// Stored counts records stored (201).
	Stored uint64
	// Malformed counts PUTs refused before verification: not a record,
	// too large, wrong content type (400, 413, 415).
	Malformed uint64
	// Invalid counts records that do not verify: another owner, a bad
	// signature, expired, made in the future, valid too long (422).
	Invalid uint64
	// NotNewer counts records refused as rollbacks (409).
	NotNewer uint64
	// NoChain counts records for keys without a chain here (404).
	NoChain uint64
	// Revoked counts records of revoked devices (422).
	Revoked uint64
}

func (c *prekeyCounters) stats() PrekeyStats {
	return PrekeyStats{Stored: c.stored.Load(), Malformed: c.malformed.Load(), Invalid: c.invalid.Load(), NotNewer: c.notNewer.Load(), NoChain: c.noChain.Load(), Revoked: c.revoked.Load()}
}

// readOctets reads a body of at most limit bytes sent as
// application/octet-stream, or answers 415, 413 or 400, counts the
// refusal in bad and reports false.
func readOctets(w http.ResponseWriter, r *http.Request, limit int64, what string, bad *counter) ([]byte, bool) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/octet-stream" {
		bad.Add(1)
		httpjson.Error(w, http.StatusUnsupportedMediaType, what+" is sent as application/octet-stream")
		return nil, false
	}
	data, ok := readBody(w, r, limit, what)
	if !ok {
		bad.Add(1)
	}
	return data, ok
}

func refuseWith(w http.ResponseWriter, status int, reason, msg string) {
	httpjson.Write(w, status, map[string]string{"error": msg, "reason": reason})
}

// putPrekey serves PUT /v1/prekeys/{key}.
func (h *Handler) putPrekey(w http.ResponseWriter, r *http.Request) {
	if limited(w, h.prekeysPerIP, h.limits.ClientIP.Key(r), "too many prekeys from your address; wait and try again") {
		return
	}
	c := &h.prekeyCount
	key, ok := h.pathKey(w, r)
	if !ok {
		c.malformed.Add(1)
		return
	}
	data, ok := readOctets(w, r, MaxPrekeySize, "a prekey record", &c.malformed)
	if !ok {
		return
	}
	p, err := session.ParsePrekey(data)
	if err != nil {
		c.malformed.Add(1)
		httpjson.Error(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := p.Verify(key, h.now()); err != nil {
		c.invalid.Add(1)
		httpjson.Error(w, http.StatusUnprocessableEntity, err.Error())
		return
	}
	if life := p.Expires.Sub(p.Created); life > MaxPrekeyLifetime {
		c.invalid.Add(1)
		httpjson.Error(w, http.StatusUnprocessableEntity, fmt.Sprintf("the prekey is valid for %v; this sig-server stores prekeys valid for %v at most", life, MaxPrekeyLifetime))
		return
	}
	ctx := r.Context()
	if err := h.prekeyOwner(ctx, key); err != nil {
		switch {
		case errors.Is(err, ErrNotFound):
			h.noChain(w, key)
		case errors.Is(err, ErrDeviceRevoked):
			h.deviceRevoked(w, key)
		default:
			h.internal(w, r, "reading the chain", err)
		}
		return
	}
	if stored, done := h.storedPrekey(w, r, p, data); done {
		return
	} else if stored != nil && !p.Created.After(stored.Created) {
		h.notNewer(w, stored)
		return
	}
	if limited(w, h.prekeysPerKey, key.String(), "too many prekeys for this key; wait and try again") {
		return
	}
	err = h.prekeys.PutPrekey(ctx, p)
	switch {
	case errors.Is(err, ErrStalePrekey):
		h.prekeysPerKey.Refund(key.String()) // lost a race: nothing stored
		if stored, done := h.storedPrekey(w, r, p, data); !done {
			h.notNewer(w, stored)
		}
		return
	case errors.Is(err, ErrNotFound): // the chain was collected meanwhile
		h.prekeysPerKey.Refund(key.String())
		h.noChain(w, key)
		return
	case errors.Is(err, ErrDeviceRevoked): // revoked meanwhile
		h.prekeysPerKey.Refund(key.String())
		h.deviceRevoked(w, key)
		return
	case err != nil:
		h.prekeysPerKey.Refund(key.String()) // nothing stored
		h.internal(w, r, "storing the prekey", err)
		return
	}
	c.stored.Add(1)
	h.log.InfoContext(ctx, "sigchain: prekey stored", "key", key.String(), "prekey_id", p.ID, "expires", p.Expires)
	writePrekeyStored(w, http.StatusCreated, p)
}

// storedPrekey returns the stored record of p's owner (nil if none). If
// it is p's very bytes, it answers 200 (a retry) and reports done; on a
// read error it answers 500 and reports done.
func (h *Handler) storedPrekey(w http.ResponseWriter, r *http.Request, p *session.Prekey, data []byte) (*session.Prekey, bool) {
	raw, err := h.prekeys.Prekey(r.Context(), p.Owner)
	if errors.Is(err, ErrNoPrekey) {
		return nil, false
	}
	if err != nil {
		h.internal(w, r, "reading the stored prekey", err)
		return nil, true
	}
	if bytes.Equal(raw, data) {
		writePrekeyStored(w, http.StatusOK, p)
		return nil, true
	}
	stored, err := session.ParsePrekey(raw)
	if err != nil {
		h.internal(w, r, "reading the stored prekey", fmt.Errorf("stored prekey is unreadable: %w", err))
		return nil, true
	}
	return stored, false
}

func writePrekeyStored(w http.ResponseWriter, status int, p *session.Prekey) {
	httpjson.Write(w, status, map[string]any{"prekey_id": p.ID, "created_ms": p.Created.UnixMilli(), "expires_ms": p.Expires.UnixMilli()})
}

func (h *Handler) noChain(w http.ResponseWriter, key kez.PublicKey) {
	h.prekeyCount.noChain.Add(1)
	refuseWith(w, http.StatusNotFound, ReasonNoChain, "this server has no chain for "+key.String()+"; a key publishes a prekey only once its chain is here")
}

func (h *Handler) deviceRevoked(w http.ResponseWriter, key kez.PublicKey) {
	h.prekeyCount.revoked.Add(1)
	refuseWith(w, http.StatusUnprocessableEntity, ReasonDeviceRevoked, "the device "+key.String()+" was revoked on its chain; it publishes no prekeys")
}

func (h *Handler) notNewer(w http.ResponseWriter, stored *session.Prekey) {
	h.prekeyCount.notNewer.Add(1)
	created := "an unknown time"
	if stored != nil {
		created = stored.Created.Format(time.RFC3339Nano)
	}
	refuseWith(w, http.StatusConflict, ReasonPrekeyNotNewer, "the stored prekey was made at "+created+"; a new one must be made later")
}

// noPrekeys answers the prekey routes of a handler whose store keeps no
// prekeys.
func noPrekeys(w http.ResponseWriter, _ *http.Request) {
	httpjson.Error(w, http.StatusNotImplemented, "this sig-server keeps no prekeys")
}

// getPrekey serves GET /v1/prekeys/{key}.
func (h *Handler) getPrekey(w http.ResponseWriter, r *http.Request) {
	key, ok := h.readKey(w, r, h.prekeyReadsPerIP, "too many prekey reads from your address; wait and try again")
	if !ok {
		return
	}
	ctx := r.Context()
	raw, err := h.prekeys.Prekey(ctx, key)
	if err == nil {
		// A record outlives its chain only in a race with the collection
		// of orphan chains, and a revoked device's only in a race with
		// its revocation; it is not served then.
		if err = h.prekeyOwner(ctx, key); errors.Is(err, ErrNotFound) || errors.Is(err, ErrDeviceRevoked) {
			err = ErrNoPrekey
		}
	}
	if errors.Is(err, ErrNoPrekey) {
		refuseWith(w, http.StatusNotFound, ReasonNoPrekey, "this server has no prekey for "+key.String())
		return
	}
	if err != nil {
		h.internal(w, r, "reading the prekey", err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(raw)))
	w.Header().Set("Cache-Control", "no-store")
	w.Write(raw)
}
