package chat

// The person's encryption keys on every device (docs/spec/chat.md §8.6):
// an install holding the primary key sends the generations its chain
// published to the person's other current devices (sync-keys), rotates
// the key when it revokes a device, and a device stores the keys it
// receives once they match its person's verified chain.

import (
	"context"
	"crypto/ecdh"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// ErrNotPrimary reports a call that needs the person's primary key on an
// install that does not hold it (a linked device): revoking a device,
// sending the person's encryption keys.
var ErrNotPrimary = errors.New("chat: this needs the primary key, which this device does not hold")

// maxQueuedKeys bounds the sync-keys bodies waiting for a fresher chain.
const maxQueuedKeys = 32

// EncryptionKey returns the person's X25519 private encryption key of
// generation gen as this install holds it: derived from the words on an
// install that holds the primary key, else one another device sent
// (sync-keys), else nil. It lets files open private wraps on a linked
// device (files.Config.Keys).
func (c *Client) EncryptionKey(gen uint32) *ecdh.PrivateKey {
	if c.id != nil {
		return c.id.EncryptionKey(gen)
	}
	if k := c.keyring.Load(); k != nil {
		return (*k)[gen]
	}
	return nil
}

// ReadKeyring returns the encryption keys stored in the chat database of
// the state folder home (docs/spec/chat.md §8.6), for a program that
// needs them without opening a Client. A folder without a database has
// none.
func ReadKeyring(ctx context.Context, home string) (Keyring, error) {
	path, ok, err := homeDatabase(home)
	if err != nil || !ok {
		return Keyring{}, err
	}
	s, err := openStore(path)
	if err != nil {
		return nil, err
	}
	defer s.close()
	return s.keyring(ctx)
}

// keyring reads the stored encryption keys.
func (s *store) keyring(ctx context.Context) (Keyring, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT generation, private FROM encryption_keys`)
	if err != nil {
		return nil, fmt.Errorf("chat: reading the encryption keys: %w", err)
	}
	defer rows.Close()
	out := Keyring{}
	for rows.Next() {
		var gen int64
		var priv []byte
		if err := rows.Scan(&gen, &priv); err != nil {
			return nil, fmt.Errorf("chat: reading the encryption keys: %w", err)
		}
		k, err := ecdh.X25519().NewPrivateKey(priv)
		if err != nil || gen < 0 || gen > int64(^uint32(0)) {
			return nil, fmt.Errorf("chat: reading the encryption keys: generation %d is damaged", gen)
		}
		out[uint32(gen)] = k
	}
	return out, rows.Err()
}

// loadKeyring reads the stored keys into memory.
func (c *Client) loadKeyring(ctx context.Context) error {
	k, err := c.db.keyring(ctx)
	if err != nil {
		return err
	}
	c.keyring.Store(&k)
	return nil
}

// checkKeys reports whether every record is the private half of the key
// st published for its generation.
func checkKeys(st *sigchain.State, recs []keyRecord) error {
	for _, r := range recs {
		k, ok := st.EncryptionKeyOf(r.Generation)
		if !ok {
			return fmt.Errorf("%w: your chain published no generation %d", ErrKeyMismatch, r.Generation)
		}
		if !k.Key.Equal(r.publicKey()) {
			return fmt.Errorf("%w: generation %d", ErrKeyMismatch, r.Generation)
		}
	}
	return nil
}

// putKeys stores checked records in tx.
func putKeys(tx *sql.Tx, recs []keyRecord, from kez.PublicKey, at int64) error {
	for _, r := range recs {
		if _, err := tx.Exec(`INSERT OR IGNORE INTO encryption_keys (generation, private, public, from_device, received_at) VALUES (?,?,?,?,?)`,
			int64(r.Generation), r.Private[:], r.publicKey().Bytes(), from.String(), at); err != nil {
			return fmt.Errorf("chat: database: %w", err)
		}
	}
	return nil
}

// applySyncKeys applies, in the receiving transaction, a sync-keys
// message from one of the user's own devices: stored if every key matches
// the chain known here, refused whole if one does not, queued if it names
// a generation newer than that chain (checked once the chain is fetched).
func (c *Client) applySyncKeys(tx *sql.Tx, r *received, now int64) error {
	recs, err := parseSyncKeys(r.m.Body)
	if err != nil {
		return err
	}
	r.control = true
	c.devs.mu.Lock()
	st := c.devs.own
	c.devs.mu.Unlock()
	if st == nil || recs[len(recs)-1].Generation > st.EncryptionGeneration() {
		if _, err := tx.Exec(`DELETE FROM keys_sync WHERE id NOT IN (SELECT id FROM keys_sync ORDER BY id DESC LIMIT ?)`, maxQueuedKeys-1); err != nil {
			return fmt.Errorf("chat: database: %w", err)
		}
		if _, err := tx.Exec(`INSERT INTO keys_sync (device, body, at) VALUES (?, ?, ?)`, r.from.String(), r.m.Body, now); err != nil {
			return fmt.Errorf("chat: database: %w", err)
		}
		r.syncKeys = true
		return nil
	}
	if err := checkKeys(st, recs); err != nil {
		return fmt.Errorf("%w (from %s)", err, r.from)
	}
	if err := putKeys(tx, recs, r.from, now); err != nil {
		return err
	}
	r.keysStored = true
	return nil
}

// applyQueuedKeys fetches the user's chain and applies the queued
// sync-keys bodies by the rule of applySyncKeys; a body still newer than
// the chain stays queued (the sig-server is behind, or unreachable).
func (c *Client) applyQueuedKeys(ctx context.Context) {
	c.keysMu.Lock()
	defer c.keysMu.Unlock()
	rows, err := c.db.db.QueryContext(ctx, `SELECT id, device, body FROM keys_sync ORDER BY id`)
	if err != nil {
		c.log.Warn("reading the keys your other devices sent", "err", err)
		return
	}
	type queued struct {
		id   int64
		from string
		body []byte
	}
	var qs []queued
	for rows.Next() {
		var q queued
		if err := rows.Scan(&q.id, &q.from, &q.body); err != nil {
			rows.Close()
			c.log.Warn("reading the keys your other devices sent", "err", err)
			return
		}
		qs = append(qs, q)
	}
	rows.Close()
	if len(qs) == 0 {
		return
	}
	st, err := c.freshOwnChain(ctx)
	if err != nil {
		c.log.Warn("cannot fetch your chain to check the keys your other device sent; trying again later", "err", err)
		return
	}
	stored := false
	err = c.db.write(ctx, func(tx *sql.Tx) error {
		stored = false
		for _, q := range qs {
			from, _ := kez.ParsePublicKey(q.from)
			recs, err := parseSyncKeys(q.body)
			switch {
			case err == nil && recs[len(recs)-1].Generation > st.EncryptionGeneration():
				continue // still ahead of the chain
			case err == nil:
				err = checkKeys(st, recs)
			}
			if err == nil {
				err = putKeys(tx, recs, from, c.now().UnixMilli())
				if err != nil {
					return err
				}
				stored = true
			} else {
				c.log.Warn("refused the keys your other device sent", "device", q.from, "err", err)
			}
			if _, err := tx.Exec(`DELETE FROM keys_sync WHERE id = ?`, q.id); err != nil {
				return fmt.Errorf("chat: database: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		c.log.Warn("storing the keys your other devices sent", "err", err)
		return
	}
	if stored {
		if err := c.loadKeyring(ctx); err != nil {
			c.log.Warn("reading the encryption keys", "err", err)
		}
	}
}

// freshOwnChain fetches the user's chain now, checks it against the pin
// and records it (ownchain.go).
func (c *Client) freshOwnChain(ctx context.Context) (*sigchain.State, error) {
	if c.cc.SigServerURL == "" {
		return nil, errNoSigServer
	}
	st, err := c.fetchOwnChain(ctx)
	if err != nil {
		return nil, fmt.Errorf("chat: fetching your own chain: %w", err)
	}
	return st, nil
}

// keyRecords derives the generations st published (the newest
// maxKeyRecords) from the primary identity.
func (c *Client) keyRecords(st *sigchain.State) []keyRecord {
	ks := st.EncryptionKeys()
	ks = ks[max(0, len(ks)-maxKeyRecords):]
	out := make([]keyRecord, 0, len(ks))
	for _, k := range ks {
		r := keyRecord{Generation: k.Generation}
		copy(r.Private[:], c.id.EncryptionKey(k.Generation).Bytes())
		out = append(out, r)
	}
	return out
}

// markKeysSent records that device was sent the generations up to gen.
func (c *Client) markKeysSent(ctx context.Context, device kez.PublicKey, gen uint32) error {
	return c.db.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO keys_sent (device, generation, at) VALUES (?, ?, ?)
			ON CONFLICT (device) DO UPDATE SET generation = max(generation, excluded.generation), at = excluded.at`,
			device.String(), int64(gen), c.now().UnixMilli())
		return err
	})
}

// keysSentTo returns the highest generation this install sent to device,
// or -1.
func (c *Client) keysSentTo(ctx context.Context, device kez.PublicKey) (int64, error) {
	var g int64
	err := c.db.db.QueryRowContext(ctx, `SELECT generation FROM keys_sent WHERE device = ?`, device.String()).Scan(&g)
	if errors.Is(err, sql.ErrNoRows) {
		return -1, nil
	}
	return g, err
}

// sendKeysWaiting sends the person's keys to device as SendHistory does
// its chunks (waiting for the device's prekey or room in its inbox).
func (c *Client) sendKeysWaiting(ctx context.Context, device kez.PublicKey, opts HistoryOptions, stats *HistoryStats) error {
	st, err := c.freshOwnChain(ctx)
	if err != nil {
		return err
	}
	// The generations sent are those of a chain on which device is
	// current: a rotation that follows its revocation is never among
	// them, whatever an earlier check of the device found.
	if !st.IsCurrentDevice(device) {
		return fmt.Errorf("%w: %s is not a current device on your chain", ErrNotOwnDevice, device)
	}
	recs := c.keyRecords(st)
	if err := c.sendWaiting(ctx, device, KindSyncKeys, marshalSyncKeys(recs), opts, stats); err != nil {
		return err
	}
	for _, r := range recs {
		stats.KeyGenerations = append(stats.KeyGenerations, r.Generation)
	}
	return c.markKeysSent(ctx, device, st.EncryptionGeneration())
}

// DistributeKeys sends the person's encryption key generations
// (docs/spec/chat.md §8.6) to each current device of the person's chain,
// other than this one, that this install has not sent the current
// generation yet, and returns how many it sent them to. It first rotates
// the key if the chain's latest revoke_device follows the current
// generation (a rotation left undone). A device that cannot be sent them
// now (it never came online to publish a prekey) gets them at a later
// call; the errors are joined. The client calls it on its own when it
// starts and each time its chain changes. Needs the primary key
// ([ErrNotPrimary]) and the broker ([ErrOffline]).
func (c *Client) DistributeKeys(ctx context.Context) (int, error) {
	if c.id == nil {
		return 0, ErrNotPrimary
	}
	if c.nc == nil {
		return 0, ErrOffline
	}
	if !c.work.Enter() {
		return 0, ErrClosed
	}
	defer c.work.Leave()
	return c.distributeKeys(ctx, true)
}

// distributeKeys is DistributeKeys; fresh false uses the user's chain as
// last fetched, if any.
func (c *Client) distributeKeys(ctx context.Context, fresh bool) (int, error) {
	c.keysMu.Lock()
	defer c.keysMu.Unlock()
	c.devs.mu.Lock()
	st := c.devs.own
	c.devs.mu.Unlock()
	if fresh || st == nil {
		var err error
		if st, err = c.freshOwnChain(ctx); err != nil {
			return 0, err
		}
	}
	if st.RotationDue() {
		var err error
		if st, _, err = c.rotate(ctx, st); err != nil {
			return 0, err
		}
	}
	sent, _, err := c.distribute(ctx, st)
	return sent, err
}

// distribute sends the keys of st to the current devices lacking its
// current generation (c.keysMu held), and counts those sent and those
// that could not be.
func (c *Client) distribute(ctx context.Context, st *sigchain.State) (sent, failed int, err error) {
	var body []byte
	var errs []error
	for _, d := range st.CurrentDevices() {
		if d == c.devKey || d == c.me {
			continue // this one; the primary device, which holds the words
		}
		g, err := c.keysSentTo(ctx, d)
		if err != nil {
			return sent, failed, fmt.Errorf("chat: database: %w", err)
		}
		if g >= int64(st.EncryptionGeneration()) {
			continue
		}
		if body == nil {
			body = marshalSyncKeys(c.keyRecords(st))
		}
		if err := c.sendToOwnDevice(ctx, d, KindSyncKeys, body); err != nil {
			if errors.Is(err, ErrNoPrekey) {
				// Not online yet: this attempt must not make the other
				// messages to it wait for the refresh interval.
				c.peerPrekeys.mu.Lock()
				delete(c.peerPrekeys.none, d)
				c.peerPrekeys.mu.Unlock()
			}
			errs = append(errs, fmt.Errorf("chat: sending your keys to %s: %w", d, err))
			failed++
			continue
		}
		if err := c.markKeysSent(ctx, d, st.EncryptionGeneration()); err != nil {
			return sent, failed, err
		}
		sent++
	}
	return sent, failed, errors.Join(errs...)
}

// keysChanged starts a distribution in the background (an install that
// holds the primary key, online), or has the one running go once more.
func (c *Client) keysChanged() {
	if c.id == nil || c.nc == nil {
		return
	}
	c.keysDue.Store(true)
	if !c.keysRunning.CompareAndSwap(false, true) {
		return
	}
	if !c.background(c.distributeJob) {
		c.keysRunning.Store(false)
	}
}

// keysRetry is the first wait before a distribution that could not reach
// every device is tried again; the wait doubles up to keysRetryMax.
const (
	keysRetry    = 5 * time.Second
	keysRetryMax = 5 * time.Minute
)

// distributeJob distributes the keys while a change is due, and, while the
// client runs, again after a wait when a device could not be sent them
// (it had not come online yet).
func (c *Client) distributeJob(ctx context.Context) {
	defer func() {
		c.keysRunning.Store(false)
		if c.keysDue.Load() && ctx.Err() == nil {
			c.keysChanged() // set while this job was ending
		}
	}()
	wait := keysRetry
	for {
		if !c.keysDue.Swap(false) {
			return
		}
		if !c.work.Enter() {
			return
		}
		n, err := c.distributeKeys(ctx, false)
		c.work.Leave()
		if err == nil {
			if n > 0 {
				c.log.Info("sent your encryption keys to your other devices", "devices", n)
			}
			wait = keysRetry
			continue
		}
		c.log.Info("your encryption keys could not reach every device of yours yet; trying again later", "sent", n, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-c.bg.Stopped():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, keysRetryMax)
		c.keysDue.Store(true)
	}
}

// appendOwn signs a link of typ with the primary key, following the
// user's chain as pinned here, and appends it at the sig-server; a head
// that moved (a share from another install) is fetched, checked against
// the pin, and the link made again, up to three times. It returns the
// chain with the link (recorded as the pin) and the link. While the last
// fetch of the chain found it rolled back or forked, nothing is appended
// (ErrOwnChainRewritten). On an error the chain returned is the last
// one known.
func (c *Client) appendOwn(ctx context.Context, st *sigchain.State, typ string, body func(*sigchain.State) ([]byte, error)) (*sigchain.State, *sigchain.Link, error) {
	if err := c.ownPin.lock(ctx); err != nil {
		return st, nil, fmt.Errorf("chat: appending %s to your chain: %w", typ, err)
	}
	defer c.ownPin.unlock()
	if err := c.ownPin.err; err != nil {
		return st, nil, fmt.Errorf("chat: appending %s to your chain: %w", typ, err)
	}
	// The pin moves only along verified extensions of itself, so a
	// newer one extends st.
	if p := c.pinnedOwnChain(); p != nil && p.Seqno() > st.Seqno() {
		st = p
	}
	for try := 0; ; try++ {
		b, err := body(st)
		if err != nil {
			return st, nil, err
		}
		l, err := sigchain.NewLink(c.id, st, typ, b, c.now())
		if err != nil {
			return st, nil, err
		}
		err = c.sig.Append(ctx, l)
		if errors.Is(err, sigchain.ErrConflict) && try < 2 {
			nst, err := c.fetchOwnLocked(ctx)
			if err != nil {
				return st, nil, fmt.Errorf("chat: fetching your own chain: %w", err)
			}
			st = nst
			continue
		}
		if err != nil {
			return st, nil, fmt.Errorf("chat: appending %s to your chain: %w", typ, err)
		}
		nst, err := st.Extend([]*sigchain.Link{l}, c.verifyOpts()...)
		if err != nil {
			return st, nil, err
		}
		if err := c.recordOwnChain(ctx, nst, []*sigchain.Link{l}); err != nil {
			return nst, l, err
		}
		return nst, l, nil
	}
}

// rotate appends a set_encryption_key link with the next generation,
// derived from the words, and starts accepting it (c.keysMu held).
func (c *Client) rotate(ctx context.Context, st *sigchain.State) (*sigchain.State, *sigchain.Link, error) {
	st, l, err := c.appendOwn(ctx, st, sigchain.TypeSetEncryptionKey, func(st *sigchain.State) ([]byte, error) {
		if !st.RotationDue() {
			return nil, errRotated
		}
		gen := st.EncryptionGeneration() + 1
		return sigchain.SetEncryptionKeyBody(c.id.EncryptionKey(gen).PublicKey(), gen), nil
	})
	if errors.Is(err, errRotated) {
		return st, nil, nil // another install rotated meanwhile
	}
	if err != nil {
		return st, nil, err
	}
	gen := st.EncryptionGeneration()
	if err := c.db.setMeta(ctx, "own_generation", strconv.FormatUint(uint64(gen), 10)); err != nil {
		return st, l, err
	}
	return st, l, c.setGenerations(gen)
}

var errRotated = errors.New("chat: rotated already")

// Revocation is what [Client.RevokeDevice] did.
type Revocation struct {
	// Link is the revoke_device link now on the chain. The chat-server
	// learns of it from its bytes (handles.Client.RegisterDevice).
	Link *sigchain.Link
	// Rotation is the set_encryption_key link that followed it, nil if it
	// could not be appended (the error says why; the client appends it
	// the next time it runs).
	Rotation *sigchain.Link
	// Generation is the person's encryption key generation after it.
	Generation uint32
	// KeysSent counts the remaining devices the new generation was sent
	// to; KeysPending those it could not be sent to now (they get it
	// when an install holding the primary key next runs).
	KeysSent, KeysPending int
}

// RevokeDevice revokes device, a current device of the person's chain,
// for good: it appends a revoke_device link, then a set_encryption_key
// link with the next generation (docs/spec/sigchain.md, "Rotation on
// revocation"), forgets the sessions with the device, and sends the new
// generation to the remaining devices (not to device). Private files
// shared afterwards are sealed to the new generation, which the revoked
// device never gets; what it received before stays with it.
//
// It does not tell the chat-server: give it Revocation.Link's bytes.
// Needs the primary key ([ErrNotPrimary]). Errors: [ErrNotOwnDevice] for
// a key that is not a current device of the chain, sigchain.ErrBadBody
// for the last current device, the sig-server's. When the revocation was
// appended but the rotation was not, the Revocation is returned with the
// error.
func (c *Client) RevokeDevice(ctx context.Context, device kez.PublicKey) (Revocation, error) {
	var rv Revocation
	if c.id == nil {
		return rv, ErrNotPrimary
	}
	if !c.work.Enter() {
		return rv, ErrClosed
	}
	defer c.work.Leave()
	c.keysMu.Lock()
	defer c.keysMu.Unlock()
	st, err := c.freshOwnChain(ctx)
	if err != nil {
		return rv, err
	}
	st, rv.Link, err = c.appendOwn(ctx, st, sigchain.TypeRevokeDevice, func(st *sigchain.State) ([]byte, error) {
		if !st.IsCurrentDevice(device) {
			return nil, fmt.Errorf("%w: %s is not a current device on your chain", ErrNotOwnDevice, device)
		}
		return sigchain.RevokeDeviceBody(device), nil
	})
	if err != nil {
		return rv, err
	}
	st, rv.Rotation, err = c.rotate(ctx, st)
	rv.Generation = st.EncryptionGeneration()
	if err != nil {
		return rv, fmt.Errorf("chat: the device is revoked, but the encryption key was not rotated: %w", err)
	}
	if c.nc == nil {
		for _, d := range st.CurrentDevices() {
			if d != c.devKey && d != c.me {
				rv.KeysPending++
			}
		}
		return rv, nil
	}
	rv.KeysSent, rv.KeysPending, err = c.distribute(ctx, st)
	if err != nil {
		c.log.Info("the new encryption key could not reach every remaining device yet", "err", err)
	}
	return rv, nil
}
