package chat

// Devices (docs/spec/chat.md §8). A person is their primary key; each of
// their devices has a key of its own, listed by the person's verified
// chain. Sessions, inbox subjects and prekeys are per device; the history
// is per person. This file maps devices to persons both ways:
//
//   - sending to a person seals one copy to each of their current devices
//     (a contact's pinned chain, a key's fetched one), and a sent copy to
//     each of the user's own other devices (their chain, refreshed once
//     per refresh interval);
//   - a delivery from device S is from the user (S is one of their own
//     devices: sync messages only; their chain wins over any other), or
//     from the contact whose pinned chain lists S (two contacts' chains
//     listing S: it is no one's, refused), or from the person the user's
//     sig-server names for S, whose chain must list S as current. A
//     revoked device is refused.
//     Looking up a device no chain known here lists is rate limited, so a
//     stranger cannot make the client fetch chains at will: over the
//     budget, the delivery waits and is delivered again later.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/ratelimit"
	"github.com/kez-lat/kez-chat/sigchain"
)

// maxDevices bounds the devices one person is sealed to: a chain lists at
// most this many current devices (sigchain's rule); a send never seals
// more copies to one person than this.
const maxDevices = sigchain.MaxDevices

// Errors of a delivery refused because of the device it came from.
var (
	// ErrDeviceRevoked: the sending device was revoked on its person's
	// chain.
	ErrDeviceRevoked = errors.New("chat: the sending device was revoked")
	// ErrUnknownDevice: the sending device is not a current device of the
	// person it claims (the chain the sig-server shows does not list it).
	ErrUnknownDevice = errors.New("chat: the sending device is not listed by its person's chain")
	// ErrDeviceAmbiguous: the sending device is listed by the chains of
	// two persons (one of them replayed the other's link request): it is
	// no one's.
	ErrDeviceAmbiguous = errors.New("chat: the sending device is listed by the chains of two persons")
	// ErrNotOwnDevice: a sync message (sync-*) from a device that is not
	// one of the user's own, or a message of another kind from one of
	// them.
	ErrNotOwnDevice = errors.New("chat: a sync message from a device that is not one of yours")
)

// Budgets of the device lookups a delivery can cause.
var (
	// unknownDeviceLookups bounds how often the user's sig-server is asked
	// whose a device is that no chain known here lists.
	unknownDeviceLookups = ratelimit.Limit{N: 256, Per: time.Minute}
	// deviceRefreshes bounds how often one person's chain is fetched
	// again because a message came from a device it did not list.
	deviceRefreshes = ratelimit.Limit{N: 2, Per: time.Minute}
)

// laterDelay is how long a delivery whose device could not be looked up
// now waits before it is delivered again.
const laterDelay = 30 * time.Second

// currentDevices returns the keys of the current devices in devs (primary
// first), at most maxDevices; the person alone when devs is empty (a
// contact pinned by an earlier release).
func currentDevices(devs []chainDevice, person kez.PublicKey) []kez.PublicKey {
	if len(devs) == 0 {
		return []kez.PublicKey{person}
	}
	out := make([]kez.PublicKey, 0, len(devs))
	for _, d := range devs {
		if !d.Revoked && len(out) < maxDevices {
			out = append(out, d.Key)
		}
	}
	return out
}

// findDevice returns the device with key k in devs.
func findDevice(devs []chainDevice, k kez.PublicKey) (chainDevice, bool) {
	for _, d := range devs {
		if d.Key == k {
			return d, true
		}
	}
	return chainDevice{}, false
}

// revokedIn returns the keys devs lists as revoked.
func revokedIn(devs []chainDevice) []kez.PublicKey {
	var out []kez.PublicKey
	for _, d := range devs {
		if d.Revoked {
			out = append(out, d.Key)
		}
	}
	return out
}

// deviceState is what the client knows of its own devices and of the
// devices it looked up.
type deviceState struct {
	mu       sync.Mutex
	own      *sigchain.State // the user's chain as last fetched
	ownDevs  []chainDevice
	checked  time.Time // when own was last fetched (or tried)
	answers  map[kez.PublicKey]deviceAnswer
	lookups  *ratelimit.Limiter // unknown devices, one bucket
	refresh  *ratelimit.Limiter // per person
	stale    *ratelimit.Limiter // per person: refreshes after the gate found a send's devices stale
	inflight map[kez.PublicKey]chan struct{}
}

// deviceAnswer is the outcome of looking up a device no known chain
// lists.
type deviceAnswer struct {
	person  kez.PublicKey
	err     error
	expires time.Time
}

func (c *Client) initDevices() {
	ds := &c.devs
	ds.answers = map[kez.PublicKey]deviceAnswer{}
	ds.lookups = ratelimit.New(unknownDeviceLookups, ratelimit.Options{Now: c.now, MaxKeys: 1})
	ds.refresh = ratelimit.New(deviceRefreshes, ratelimit.Options{Now: c.now, MaxKeys: maxKeyChains})
	ds.stale = ratelimit.New(staleRefreshes, ratelimit.Options{Now: c.now, MaxKeys: maxKeyChains})
	ds.inflight = map[kez.PublicKey]chan struct{}{}
}

// setOwnChain records a verified state of the user's chain: its devices,
// and, for devices it shows revoked that were not before, the sessions
// and unsent copies with them are deleted.
func (c *Client) setOwnChain(ctx context.Context, st *sigchain.State) {
	devs := chainDevices(st)
	ds := &c.devs
	ds.mu.Lock()
	if ds.own != nil && ds.own.Seqno() > st.Seqno() {
		ds.mu.Unlock()
		return
	}
	old, changed := ds.ownDevs, ds.own != nil && ds.own.Seqno() < st.Seqno()
	ds.own, ds.ownDevs, ds.checked = st, devs, c.now()
	ds.mu.Unlock()
	if changed {
		c.keysChanged()
	}
	if err := c.forgetRevoked(ctx, old, devs); err != nil {
		c.log.Warn("deleting the sessions with revoked devices", "err", err)
	}
	for _, d := range devs {
		if d.Key == c.devKey && d.Revoked {
			c.log.Warn("this device was revoked on your chain: it can no longer send or receive")
		}
	}
}

// forgetRevoked deletes the sessions with, and the unsent envelopes to,
// the devices revoked in devs that old did not show revoked.
func (c *Client) forgetRevoked(ctx context.Context, old, devs []chainDevice) error {
	var gone []kez.PublicKey
	for _, k := range revokedIn(devs) {
		if d, ok := findDevice(old, k); !ok || !d.Revoked {
			gone = append(gone, k)
		}
	}
	if len(gone) == 0 {
		return nil
	}
	return c.db.write(ctx, func(tx *sql.Tx) error { return deleteDeviceState(tx, gone) })
}

// deleteDeviceState deletes, in tx, the sessions with the devices, what
// is queued or due for them, and the copy kept of their prekeys (which
// would start a new session with a revoked device the sig-server no
// longer serves a prekey for).
func deleteDeviceState(tx *sql.Tx, devices []kez.PublicKey) error {
	for _, k := range devices {
		for _, q := range []string{`DELETE FROM sessions WHERE peer = ?`, `DELETE FROM outbox WHERE device = ?`,
			`DELETE FROM undecryptable WHERE peer = ?`, `DELETE FROM resend_due WHERE peer = ?`, `DELETE FROM peer_prekeys WHERE peer = ?`,
			`DELETE FROM copies_due WHERE device = ?`} {
			if _, err := tx.Exec(q, k.String()); err != nil {
				return fmt.Errorf("chat: database: %w", err)
			}
		}
	}
	return nil
}

// ownDevices returns the devices of the user's chain, fetched again from
// the user's sig-server once the refresh interval has passed (force: now).
// A sig-server that cannot be reached leaves the last list known; with
// none known, this device alone.
func (c *Client) ownDevices(ctx context.Context, force bool) []chainDevice {
	ds := &c.devs
	ds.mu.Lock()
	st, devs := ds.own, ds.ownDevs
	due := force || st == nil || c.now().Sub(ds.checked) >= c.cfg.RefreshInterval
	if due {
		ds.checked = c.now()
	}
	ds.mu.Unlock()
	if due && c.cc.SigServerURL != "" {
		// Checked against the pin: a rolled back or forked chain leaves
		// the devices pinned (ownchain.go).
		if _, err := c.fetchOwnChain(ctx); err == nil {
			ds.mu.Lock()
			devs = ds.ownDevs
			ds.mu.Unlock()
		} else {
			c.log.Debug("cannot fetch your own chain; using the devices known", "err", err)
		}
	}
	if len(devs) == 0 {
		return []chainDevice{{Key: c.devKey, Primary: c.devKey == c.me}}
	}
	return devs
}

// otherOwnDevices returns the user's current devices other than this one.
func (c *Client) otherOwnDevices(ctx context.Context) []kez.PublicKey {
	var out []kez.PublicKey
	for _, k := range currentDevices(c.ownDevices(ctx, false), c.me) {
		if k != c.devKey {
			out = append(out, k)
		}
	}
	return out
}

// OwnDevices fetches the user's chain from their sig-server now and
// returns its devices (primary first, revoked ones included). Sessions
// with devices it shows revoked are deleted, and no copy is sealed to
// them any more: call it after revoking a device.
func (c *Client) OwnDevices(ctx context.Context) ([]sigchain.Device, error) {
	nst, err := c.freshOwnChain(ctx)
	if err != nil {
		return nil, err
	}
	return chainDevices(nst), nil
}

// DeviceKey returns the key this client logs in with (its device).
func (c *Client) DeviceKey() kez.PublicKey { return c.devKey }

// sender is whom a delivery came from: the device its subject names and
// that device's person.
type sender struct {
	device kez.PublicKey
	person kez.PublicKey
	own    bool  // one of the user's own devices: sync messages only
	err    error // refused: a revoked device, or one its person's chain does not list
	later  bool  // not known now (the lookup budget is spent): delivered again later
}

// whoSent maps the device dev to its person (see the top of this file).
func (c *Client) whoSent(ctx context.Context, dev kez.PublicKey) sender {
	s := sender{device: dev}
	p, ok, err := c.knownSender(dev)
	if ok && p == c.me && dev != c.devKey {
		// One of the user's own devices: their chain is checked again
		// when due, as a contact's is, so a device revoked from another
		// one is refused here too.
		c.ownDevices(ctx, false)
		p, ok, err = c.knownSender(dev)
	}
	if ok || err != nil {
		s.person, s.err = p, err
		s.own = p == c.me && err == nil
		return s
	}
	// One of the user's own devices, added since the chain was fetched?
	for _, d := range c.ownDevices(ctx, false) {
		if d.Key == dev {
			s.person, s.own = c.me, !d.Revoked
			if d.Revoked {
				s.err = fmt.Errorf("%w: %s is a revoked device of yours", ErrDeviceRevoked, dev)
			}
			return s
		}
	}
	ds := &c.devs
	now := c.now()
	ds.mu.Lock()
	a, ok := ds.answers[dev]
	ds.mu.Unlock()
	if ok && now.Before(a.expires) {
		s.person, s.err, s.own = a.person, a.err, a.person == c.me && a.err == nil
		return s
	}
	if allowed, _ := ds.lookups.Allow(""); !allowed {
		s.later = true
		return s
	}
	a = c.lookupDevice(ctx, dev)
	a.expires = now.Add(max(c.cfg.RefreshInterval, time.Second))
	if a.err != nil && !isRefusal(a.err) {
		// A server that could not answer: try again later, not refused
		// (nothing is cached).
		c.log.Debug("cannot look up the person of a device", "device", dev, "err", a.err)
		s.later = true
		return s
	}
	ds.mu.Lock()
	if len(ds.answers) >= maxKeyChains {
		clear(ds.answers)
	}
	ds.answers[dev] = a
	ds.mu.Unlock()
	s.person, s.err, s.own = a.person, a.err, a.person == c.me && a.err == nil
	return s
}

// claim is a person whose chain, as known here, lists a device.
type claim struct {
	person kez.PublicKey
	dev    chainDevice
}

// claimsOf returns the persons whose chains known here list dev: the
// user (their own chain as last fetched; this device and the user's
// primary key are theirs too), first, then each contact whose pinned
// chain lists it (or whose key it is, for a contact pinned by an earlier
// release, whose chain lists no devices). A link request names no
// person, so a dishonest sig-server can serve a device's add_device
// replayed on a second chain: a device may have several claims.
func (c *Client) claimsOf(dev kez.PublicKey) []claim {
	var out []claim
	ds := &c.devs
	ds.mu.Lock()
	if d, ok := findDevice(ds.ownDevs, dev); ok {
		out = append(out, claim{c.me, d})
	} else if dev == c.devKey || dev == c.me {
		out = append(out, claim{c.me, chainDevice{Key: dev, Primary: dev == c.me}})
	}
	ds.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	add := func(cl claim) {
		if !slices.ContainsFunc(out, func(o claim) bool { return o.person == cl.person }) {
			out = append(out, cl)
		}
	}
	for _, cs := range c.byDevice[dev] {
		if d, ok := findDevice(cs.devices, dev); ok {
			add(claim{cs.c.Key, d})
		}
	}
	if pc := c.byKey[dev]; pc != nil && len(pc.devices) == 0 {
		add(claim{dev, chainDevice{Key: dev, Primary: true}})
	}
	return out
}

// knownSender maps dev with what is known without asking a server: one
// of the user's own devices (their chain is theirs to trust: it wins over
// any contact's claim), a contact's device (pinned chain), or a
// contact's primary key. ok is false when dev is none of those; err is
// set for a revoked device, and for one the chains of two contacts list
// (ErrDeviceAmbiguous: it is no one's, whichever was pinned first).
func (c *Client) knownSender(dev kez.PublicKey) (person kez.PublicKey, ok bool, err error) {
	cl := c.claimsOf(dev)
	switch {
	case len(cl) == 0:
		return kez.PublicKey{}, false, nil
	case len(cl) > 1 && cl[0].person != c.me:
		return kez.PublicKey{}, false, fmt.Errorf("%w: %s is listed by the chains of %s and %s", ErrDeviceAmbiguous, dev, cl[0].person, cl[1].person)
	}
	owner, d := cl[0].person, cl[0].dev
	if d.Revoked {
		if owner == c.me {
			return owner, false, fmt.Errorf("%w: %s is a revoked device of yours", ErrDeviceRevoked, dev)
		}
		return owner, false, fmt.Errorf("%w: %s of %s", ErrDeviceRevoked, dev, owner)
	}
	return owner, true, nil
}

// claimedByOther reports whether a chain known here other than person's
// lists dev (the user's own, or another contact's): such a device is
// sealed nothing meant for person, and person's chain revoking it deletes
// nothing of it. The user's own chain is theirs: nothing overrides it.
func (c *Client) claimedByOther(dev, person kez.PublicKey) bool {
	if person == c.me {
		return false
	}
	for _, cl := range c.claimsOf(dev) {
		if cl.person != person {
			return true
		}
	}
	return false
}

// revokedOnlyBy returns the devices devs (person's chain) shows revoked
// that no other chain known here lists: those whose sessions and queued
// copies person's revocation deletes. A contact's chain cannot make this
// client forget a device of the user's, or of another contact's.
func (c *Client) revokedOnlyBy(person kez.PublicKey, devs []chainDevice) []kez.PublicKey {
	var out []kez.PublicKey
	for _, k := range revokedIn(devs) {
		if !c.claimedByOther(k, person) {
			out = append(out, k)
		}
	}
	return out
}

// onlyTheirs returns the keys of person's devices no other chain known
// here lists (claimedByOther); the others are left out, logged.
func (c *Client) onlyTheirs(person kez.PublicKey, keys []kez.PublicKey) []kez.PublicKey {
	out := make([]kez.PublicKey, 0, len(keys))
	for _, k := range keys {
		if c.claimedByOther(k, person) {
			c.log.Warn("a device another chain lists too is sealed nothing", "device", k, "person", person)
			continue
		}
		out = append(out, k)
	}
	return out
}

// lookupDevice asks the user's sig-server whose device dev is, and checks
// that person's chain: it must list dev as current. A key that is no
// one's device is its own person (a person's primary key, or a stranger
// of an earlier release).
func (c *Client) lookupDevice(ctx context.Context, dev kez.PublicKey) deviceAnswer {
	if c.cc.SigServerURL == "" {
		return deviceAnswer{person: dev}
	}
	lctx, cancel := context.WithTimeout(ctx, c.cfg.RefreshTimeout)
	defer cancel()
	person, revoked, err := c.devicePerson(lctx, dev)
	var se *sigchain.ServerError
	switch {
	case errors.Is(err, sigchain.ErrNotFound), errors.Is(err, sigchain.ErrNoDevice), errors.As(err, &se) && se.StatusCode == http.StatusNotImplemented:
		// No chain lists it (or a sig-server of an earlier release, which
		// keeps no devices): a person's own key.
		return deviceAnswer{person: dev}
	case err != nil:
		return deviceAnswer{err: err}
	case revoked:
		return deviceAnswer{person: person, err: fmt.Errorf("%w: %s of %s", ErrDeviceRevoked, dev, person)}
	case person == dev:
		return deviceAnswer{person: dev}
	}
	var devs []chainDevice
	switch cs := c.contactByKey(person); {
	case person == c.me:
		devs = c.ownDevices(lctx, c.mayRefresh(person))
	case cs != nil:
		if c.mayRefresh(person) {
			if err := c.refreshContact(lctx, cs, false, true); err != nil {
				c.log.Debug("refreshing a contact whose new device sent a message", "handle", cs.c.Handle, "err", err)
			}
		}
		c.mu.Lock()
		devs = cs.devices
		c.mu.Unlock()
	default:
		st, err := c.keyChain(lctx, person)
		var le *sigchain.LinkError
		if errors.Is(err, sigchain.ErrNotFound) || errors.As(err, &le) {
			return deviceAnswer{person: person, err: fmt.Errorf("%w: %s claims to be a device of %s, whose chain: %w", ErrUnknownDevice, dev, person, err)}
		}
		if err != nil {
			return deviceAnswer{err: err}
		}
		devs = chainDevices(st)
	}
	d, ok := findDevice(devs, dev)
	switch {
	case !ok:
		return deviceAnswer{person: person, err: fmt.Errorf("%w: %s claims to be a device of %s", ErrUnknownDevice, dev, person)}
	case d.Revoked:
		return deviceAnswer{person: person, err: fmt.Errorf("%w: %s of %s", ErrDeviceRevoked, dev, person)}
	}
	return deviceAnswer{person: person}
}

// mayRefresh reports whether person's chain may be fetched again now
// because of a device it did not list (deviceRefreshes).
func (c *Client) mayRefresh(person kez.PublicKey) bool {
	ok, _ := c.devs.refresh.Allow(person.String())
	return ok
}

// contactByKey returns the contact whose pinned key is k, or nil.
func (c *Client) contactByKey(k kez.PublicKey) *contactState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byKey[k]
}

// personOf returns the person of a device this client knows (a contact's
// device or one of the user's own), without asking a server; the device
// itself otherwise.
func (c *Client) personOf(dev kez.PublicKey) kez.PublicKey {
	if p, ok, _ := c.knownSender(dev); ok || !p.IsZero() {
		return p
	}
	ds := &c.devs
	ds.mu.Lock()
	a, ok := ds.answers[dev]
	ds.mu.Unlock()
	if ok && a.err == nil {
		return a.person
	}
	return dev
}

// indexDevices puts cs's devices in the device index (c.mu held),
// replacing those of old. A device several contacts' chains list is
// indexed under each of them.
func (c *Client) indexDevices(cs *contactState, old []chainDevice) {
	for _, d := range old {
		rest := slices.DeleteFunc(c.byDevice[d.Key], func(o *contactState) bool { return o == cs })
		if len(rest) == 0 {
			delete(c.byDevice, d.Key)
		} else {
			c.byDevice[d.Key] = rest
		}
	}
	for _, d := range cs.devices {
		if !slices.Contains(c.byDevice[d.Key], cs) {
			c.byDevice[d.Key] = append(c.byDevice[d.Key], cs)
		}
	}
}

// unindexDevices takes cs's devices out of the device index (c.mu held).
func (c *Client) unindexDevices(cs *contactState) {
	prev := cs.devices
	cs.setDevices(nil)
	c.indexDevices(cs, prev)
}

// putDevices stores person's devices, as their pinned chain lists them,
// in tx.
func putDevices(tx *sql.Tx, person kez.PublicKey, devs []chainDevice) error {
	if _, err := tx.Exec(`DELETE FROM contact_devices WHERE person = ?`, person.String()); err != nil {
		return err
	}
	for _, d := range devs {
		if _, err := tx.Exec(`INSERT INTO contact_devices (person, device, name, primary_device, added_seqno, revoked) VALUES (?,?,?,?,?,?)`,
			person.String(), d.Key.String(), d.Name, boolInt(d.Primary), int64(d.AddedSeqno), boolInt(d.Revoked)); err != nil {
			return err
		}
	}
	return nil
}

// loadDevices reads every contact's devices, by person.
func (s *store) loadDevices(ctx context.Context) (map[kez.PublicKey][]chainDevice, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT person, device, name, primary_device, added_seqno, revoked FROM contact_devices ORDER BY person, primary_device DESC, added_seqno`)
	if err != nil {
		return nil, fmt.Errorf("chat: reading the contacts' devices: %w", err)
	}
	defer rows.Close()
	out := map[kez.PublicKey][]chainDevice{}
	for rows.Next() {
		var p, k string
		var d chainDevice
		var primary, revoked, seqno int64
		if err := rows.Scan(&p, &k, &d.Name, &primary, &seqno, &revoked); err != nil {
			return nil, fmt.Errorf("chat: reading the contacts' devices: %w", err)
		}
		person, err1 := kez.ParsePublicKey(p)
		key, err2 := kez.ParsePublicKey(k)
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("chat: reading the contacts' devices: %w", err)
		}
		d.Key, d.Primary, d.Revoked, d.AddedSeqno = key, primary != 0, revoked != 0, uint64(seqno)
		out[person] = append(out[person], d)
	}
	return out, rows.Err()
}

// deviceEvents returns the contact events of a chain whose devices went
// from old to devs: device_added and device_revoked.
func deviceEvents(old, devs []chainDevice, seqno uint64) [][2]string {
	var events [][2]string
	for _, d := range devs {
		o, had := findDevice(old, d.Key)
		switch {
		case !had && !d.Primary && !d.Revoked:
			events = append(events, [2]string{eventDeviceAdded, deviceDetail(d, false, seqno)})
		case d.Revoked && (!had || !o.Revoked):
			events = append(events, [2]string{eventDeviceRevoked, deviceDetail(d, true, seqno)})
		}
	}
	return events
}
