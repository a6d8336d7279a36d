// Package uifixture makes a KEZ state folder ("home") full of
// conversations, for tests and benchmarks of the conversation list and of
// `kez ui`: an identity, a profile, contacts with real sigchains and a
// history of messages in the chat SDK's own schema, written without any
// server. It is for tests and benchmarks only: nothing outside a _test.go
// file imports it.
//
//	f, err := uifixture.Write(t.TempDir(), uifixture.Options{Contacts: 1000, Messages: 100000})
//	// kez ui --home f.Home, kez contacts --home f.Home
//
// Everything is derived from fixed seeds and Options.Now, so two homes
// written with the same options hold the same keys, handles and messages
// (only the prekeys chat.Open makes differ).
package uifixture

import (
	"context"
	"crypto/sha512"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/internal/sqlitedb"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// Options say what the home holds. Zero values take the defaults.
type Options struct {
	Contacts int       // contacts, each with a conversation (default 10)
	Messages int       // messages spread over them (default 10 per contact); fewer than Contacts leaves some without
	Domain   string    // the handle domain (default "kez.lat")
	Now      time.Time // the newest message's time (default 2026-12-07 12:00 UTC)
}

// Fixture is a written home.
type Fixture struct {
	Home    string        // the state folder: kez --home Home
	Me      kez.PublicKey // the user's key (the identity, saved without a passphrase)
	Handle  string        // the user's handle as the profile names it ("me@kez.lat")
	Handles []string      // the contacts' handles, the newest conversation first
}

// unreadEvery: every unreadEvery-th conversation ends with unread
// messages (1 to 3); the rest is read.
const unreadEvery = 7

// Write makes the home in dir (created if needed; it must hold no
// identity or chat.db yet) and checks it by opening it with chat.Open,
// offline: the conversation list must show every contact, in the order of
// Fixture.Handles.
func Write(dir string, o Options) (*Fixture, error) {
	if o.Contacts == 0 {
		o.Contacts = 10
	}
	if o.Messages == 0 {
		o.Messages = 10 * o.Contacts
	}
	if o.Domain == "" {
		o.Domain = "kez.lat"
	}
	if o.Now.IsZero() {
		o.Now = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	}
	if o.Contacts < 0 || o.Messages < 0 {
		return nil, errors.New("uifixture: negative counts")
	}
	if _, err := os.Stat(filepath.Join(dir, chat.DBFileName)); err == nil {
		return nil, fmt.Errorf("uifixture: %s already holds a chat.db", dir)
	}
	me, err := identity("me")
	if err != nil {
		return nil, err
	}
	f := &Fixture{Home: dir, Me: me.PublicKey(), Handle: "me@" + o.Domain}
	if err := kez.SaveIdentity(dir, me, nil); err != nil {
		return nil, fmt.Errorf("uifixture: %w", err)
	}
	if err := writeProfile(dir, f, o.Domain); err != nil {
		return nil, err
	}
	// The SDK makes its schema (and this device's prekeys).
	ctx := context.Background()
	cfg := chat.Config{Client: client.Config{Identity: me, Home: dir, Domain: o.Domain}}
	c, err := chat.Open(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("uifixture: %w", err)
	}
	if err := c.Close(); err != nil {
		return nil, fmt.Errorf("uifixture: %w", err)
	}
	contacts, err := makeContacts(o)
	if err != nil {
		return nil, err
	}
	// Conversations with messages first, newest first; those without
	// (fewer messages than contacts) after, by handle.
	for _, ct := range contacts {
		f.Handles = append(f.Handles, ct.handle)
	}
	slices.Sort(f.Handles[min(o.Messages, len(f.Handles)):])
	if err := insert(filepath.Join(dir, chat.DBFileName), f.Me, contacts, o); err != nil {
		return nil, err
	}
	if err := check(ctx, cfg, f); err != nil {
		return nil, err
	}
	return f, nil
}

// writeProfile writes the profile the kez command reads (profile.json:
// the handle registered for the key and its domain), as "kez register"
// leaves it, without servers.
func writeProfile(dir string, f *Fixture, domain string) error {
	b, err := json.Marshal(map[string]string{"key": f.Me.String(), "handle": f.Handle, "domain": domain})
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "profile.json"), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("uifixture: %w", err)
	}
	return nil
}

// identity derives a fixed identity from a name.
func identity(name string) (*kez.Identity, error) {
	seed := sha512.Sum512([]byte("uifixture " + name))
	id, err := kez.FromSeed(seed[:])
	if err != nil {
		return nil, fmt.Errorf("uifixture: %w", err)
	}
	return id, nil
}

// contact is one contact with its chain.
type contact struct {
	handle string
	id     *kez.Identity
	link   *sigchain.Link // the eldest link, the whole chain
	st     *sigchain.State
}

var names = []string{"ada", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter", "zoe"}

// makeContacts makes the contacts, the newest conversation first, each
// with an eldest link naming its handle.
func makeContacts(o Options) ([]contact, error) {
	out := make([]contact, o.Contacts)
	for i := range out {
		name := names[i%len(names)]
		if i >= len(names) {
			name = fmt.Sprintf("%s%d", name, i/len(names))
		}
		id, err := identity(name)
		if err != nil {
			return nil, err
		}
		h := name + "@" + o.Domain
		l, err := sigchain.NewLink(id, nil, sigchain.TypeEldest,
			sigchain.EldestBody(id.PublicKey(), id.EncryptionKey(0).PublicKey(), 0, h), o.Now.Add(-365*24*time.Hour))
		if err != nil {
			return nil, fmt.Errorf("uifixture: %w", err)
		}
		st, err := sigchain.Verify([]*sigchain.Link{l})
		if err != nil {
			return nil, fmt.Errorf("uifixture: %w", err)
		}
		out[i] = contact{handle: h, id: id, link: l, st: st}
	}
	return out, nil
}

// The rows follow the columns of the SDK's schema (chat/store.go).
const (
	insertContact = `INSERT INTO contacts (handle, key, enc_key, generation, sig_server, pin_seqno, pin_head, added_at, refreshed_at, verified_at)
		VALUES (?, ?, ?, 0, '', ?, ?, ?, ?, ?)`
	insertLink    = `INSERT INTO chain_links (key, seqno, link) VALUES (?, ?, ?)`
	insertDevice  = `INSERT INTO contact_devices (person, device, name, primary_device, added_seqno, revoked) VALUES (?, ?, ?, ?, ?, ?)`
	insertEvent   = `INSERT INTO contact_events (handle, at, event, detail) VALUES (?, ?, 'added', ?)`
	insertMessage = `INSERT INTO messages (id, incoming, peer_key, peer_handle, from_key, to_key, sent_at, received_at, kind, ref, body, stream_seq, trust, state, read, delivered_at, grp)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'text', NULL, ?, ?, 'trusted', ?, ?, ?, '')`
)

// insert writes the contacts and messages in one transaction.
func insert(path string, me kez.PublicKey, contacts []contact, o Options) (err error) {
	db, err := sqlitedb.Open(path, sqlitedb.Options{})
	if err != nil {
		return fmt.Errorf("uifixture: %w", err)
	}
	defer db.Close()
	tx, err := db.Begin()
	if err != nil {
		return fmt.Errorf("uifixture: %w", err)
	}
	defer func() {
		if err != nil {
			tx.Rollback()
			err = fmt.Errorf("uifixture: %w", err)
		}
	}()
	stmt := func(q string) *sql.Stmt {
		if err != nil {
			return nil
		}
		var s *sql.Stmt
		s, err = tx.Prepare(q)
		return s
	}
	ctStmt, linkStmt, devStmt, evStmt, msgStmt := stmt(insertContact), stmt(insertLink), stmt(insertDevice), stmt(insertEvent), stmt(insertMessage)
	if err != nil {
		return err
	}
	added := o.Now.Add(-300 * 24 * time.Hour).UnixMilli()
	for i, ct := range contacts {
		key := ct.id.PublicKey().String()
		var verified any
		if i%5 == 0 {
			verified = added
		}
		pin := ct.st.Pin()
		if _, err = ctStmt.Exec(ct.handle, key, ct.st.EncryptionKey().Bytes(), int64(pin.Seqno), pin.Head.String(), added, o.Now.UnixMilli(), verified); err != nil {
			return err
		}
		if _, err = linkStmt.Exec(key, int64(ct.link.Seqno()), ct.link.Bytes()); err != nil {
			return err
		}
		for _, d := range ct.st.Devices() {
			if _, err = devStmt.Exec(key, d.Key.String(), d.Name, b2i(d.Primary), int64(d.AddedSeqno), b2i(d.Revoked)); err != nil {
				return err
			}
		}
		if _, err = evStmt.Exec(ct.handle, added, fmt.Sprintf("key %s, chain seqno %d", key, pin.Seqno)); err != nil {
			return err
		}
	}
	if err = insertMessages(msgStmt, me, contacts, o); err != nil {
		return err
	}
	return tx.Commit()
}

// insertMessages spreads o.Messages over the conversations: conversation
// i's newest message is i minutes before o.Now, its others ten minutes
// apart before it, alternately received and sent; the newest one to three
// received messages of every unreadEvery-th conversation are unread.
func insertMessages(s *sql.Stmt, me kez.PublicKey, contacts []contact, o Options) error {
	if len(contacts) == 0 {
		return nil
	}
	rng := rand.New(rand.NewChaCha8([32]byte{'u', 'i'}))
	var seq int64
	for i, ct := range contacts {
		n := o.Messages / len(contacts)
		if i < o.Messages%len(contacts) {
			n++
		}
		peer := ct.id.PublicKey().String()
		unread := 0
		if i%unreadEvery == 0 {
			unread = 1 + i/unreadEvery%3
		}
		newest := o.Now.Add(-time.Duration(i) * time.Minute)
		for k := n - 1; k >= 0; k-- { // oldest first
			seq++
			at := newest.Add(-time.Duration(k) * 10 * time.Minute).UnixMilli()
			incoming := k%2 == 0 // the newest is received
			from, to := me.String(), peer
			state, read, delivered := "sent", true, any(at+1000)
			if incoming {
				from, to, state, delivered = peer, me.String(), "", nil
				read = k/2 >= unread
			}
			var id [16]byte
			binary.BigEndian.PutUint64(id[:8], rng.Uint64())
			binary.BigEndian.PutUint64(id[8:], rng.Uint64())
			body := fmt.Sprintf("message %d of %d with %s", n-k, n, ct.handle)
			if _, err := s.Exec(id[:], b2i(incoming), peer, ct.handle, from, to, at, at+200, []byte(body), seq, state, b2i(read), delivered); err != nil {
				return err
			}
		}
	}
	return nil
}

// check opens the home with chat.Open, offline, and compares its
// conversation list with the fixture.
func check(ctx context.Context, cfg chat.Config, f *Fixture) (err error) {
	c, err := chat.Open(ctx, cfg)
	if err != nil {
		return fmt.Errorf("uifixture: the home does not open: %w", err)
	}
	defer func() {
		if cerr := c.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("uifixture: %w", cerr)
		}
	}()
	cs, err := c.Conversations(ctx)
	if err != nil {
		return fmt.Errorf("uifixture: %w", err)
	}
	got := make([]string, len(cs))
	for i, cv := range cs {
		got[i] = cv.Handle
	}
	if !slices.Equal(got, f.Handles) {
		return fmt.Errorf("uifixture: the conversation list shows %d rows, not the %d contacts in order", len(got), len(f.Handles))
	}
	return nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
