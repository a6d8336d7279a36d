package chat

import (
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// The person's encryption keys on every device (docs/spec/chat.md §8.6),
// on a real stack: NATS with the callout and gate, chat-server,
// sig-server, SQLite.

// sameKey reports whether a and b are the same private key (nil: no).
func sameKey(a, b *ecdh.PrivateKey) bool { return a != nil && b != nil && a.Equal(b) }

// waitKey receives on c until it holds the person's key of generation
// gen.
func waitKey(t testing.TB, c *testClient, gen uint32) {
	t.Helper()
	receiveUntil(t, c, "the encryption key", func(int) bool { return c.EncryptionKey(gen) != nil })
}

// storedKeys counts the keys in c's database and queued bodies.
func storedKeys(t testing.TB, c *testClient) (keys, queued int) {
	t.Helper()
	if err := c.db.db.QueryRow(`SELECT count(*) FROM encryption_keys`).Scan(&keys); err != nil {
		t.Fatal(err)
	}
	if err := c.db.db.QueryRow(`SELECT count(*) FROM keys_sync`).Scan(&queued); err != nil {
		t.Fatal(err)
	}
	return keys, queued
}

// keysBody is a sync-keys body of the generations gens of id.
func keysBody(id *kez.Identity, gens ...uint32) []byte {
	var recs []keyRecord
	for _, g := range gens {
		r := keyRecord{Generation: g}
		copy(r.Private[:], id.EncryptionKey(g).Bytes())
		recs = append(recs, r)
	}
	return marshalSyncKeys(recs)
}

// A linked device gets its person's key from the primary device, checked
// against the chain and kept in chat.db across a restart; a revocation
// rotates the key, the remaining device gets the new generation and the
// revoked one never does.
func TestKeysReachLinkedDevicesAndRotate(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	ctx := testCtx(t)
	bob := st.NewUser(t, "bob")
	laptopKey := st.AddDevice(t, bob, "laptop")
	phoneKey := st.AddDevice(t, bob, "phone")
	laptopHome := t.TempDir()
	laptop := openClientIn(t, st, bob, laptopHome, func(c *Config) {
		c.Client.Identity, c.Client.Device, c.Client.Person = nil, laptopKey, bob.Key
	})
	phone := openDevice(t, st, bob, phoneKey, "phone")
	if laptop.EncryptionKey(0) != nil {
		t.Fatal("a linked device holds a key before it was sent one")
	}
	primary := openClient(t, st, bob)
	if _, err := primary.DistributeKeys(ctx); err != nil {
		t.Fatal(err)
	}
	waitKey(t, laptop, 0)
	waitKey(t, phone, 0)
	for _, c := range []*testClient{laptop, phone} {
		if !sameKey(c.EncryptionKey(0), bob.Identity.EncryptionKey(0)) {
			t.Fatal("the key a device received is not the person's")
		}
	}
	// Sent once: a second call finds every device served.
	if n, err := primary.DistributeKeys(ctx); err != nil || n != 0 {
		t.Fatalf("a second distribution sent to %d devices: %v", n, err)
	}
	// A program that does not open a client reads them too.
	if k, err := ReadKeyring(ctx, laptopHome); err != nil || !sameKey(k.EncryptionKey(0), bob.Identity.EncryptionKey(0)) {
		t.Fatalf("ReadKeyring: %v %v", err, k)
	}

	rv, err := primary.RevokeDevice(ctx, phoneKey.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if rv.Link == nil || rv.Rotation == nil || rv.Generation != 1 || rv.KeysSent != 1 || rv.KeysPending != 0 {
		t.Fatalf("revocation %+v", rv)
	}
	state, err := (&sigchain.Client{BaseURL: st.SigServerURL}).FetchVerified(ctx, bob.Key, nil)
	if err != nil {
		t.Fatal(err)
	}
	if state.EncryptionGeneration() != 1 || !state.EncryptionKey().Equal(bob.Identity.EncryptionKey(1).PublicKey()) ||
		state.Seqno() != rv.Rotation.Seqno() || rv.Rotation.Seqno() != rv.Link.Seqno()+1 || state.IsCurrentDevice(phoneKey.PublicKey()) {
		t.Fatalf("chain after the revocation: generation %d, seqno %d", state.EncryptionGeneration(), state.Seqno())
	}
	st.RegisterDeviceLink(t, rv.Link)
	waitKey(t, laptop, 1)
	if !sameKey(laptop.EncryptionKey(1), bob.Identity.EncryptionKey(1)) {
		t.Fatal("the remaining device got a wrong generation 1")
	}
	if phone.EncryptionKey(1) != nil {
		t.Fatal("the revoked device got the new generation")
	}
	if n, err := phone.Sync(ctx); err == nil && n > 0 {
		t.Fatalf("the revoked device received %d messages", n)
	}
	if phone.EncryptionKey(1) != nil {
		t.Fatal("the revoked device got the new generation")
	}
	// Revoking it again is refused, and changes nothing.
	if _, err := primary.RevokeDevice(ctx, phoneKey.PublicKey()); !errors.Is(err, ErrNotOwnDevice) {
		t.Fatalf("revoking a revoked device: %v", err)
	}
	// A linked device cannot revoke or send keys.
	if _, err := laptop.RevokeDevice(ctx, primary.DeviceKey()); !errors.Is(err, ErrNotPrimary) {
		t.Fatalf("a linked device revokes: %v", err)
	}
	if _, err := laptop.DistributeKeys(ctx); !errors.Is(err, ErrNotPrimary) {
		t.Fatalf("a linked device distributes: %v", err)
	}

	// The keys outlive the client.
	if err := laptop.Close(); err != nil {
		t.Fatal(err)
	}
	again := openClientIn(t, st, bob, laptopHome, func(c *Config) {
		c.Client.Identity, c.Client.Device, c.Client.Person = nil, laptopKey, bob.Key
	})
	if !sameKey(again.EncryptionKey(0), bob.Identity.EncryptionKey(0)) || !sameKey(again.EncryptionKey(1), bob.Identity.EncryptionKey(1)) {
		t.Fatal("the keys were not kept")
	}
}

// A sync-keys message from a device that is not one of the person's is
// refused, even with the right keys; one from an own device with a key
// the chain did not publish is refused whole; neither stores anything.
// One that names a generation the chain does not have yet waits for the
// chain and is dropped if its key does not match it then.
func TestKeysForgedRefused(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	ctx := testCtx(t)
	bob := st.NewUser(t, "bob")
	laptopKey := st.AddDevice(t, bob, "laptop")
	phoneKey := st.AddDevice(t, bob, "phone")
	laptop := openDevice(t, st, bob, laptopKey, "laptop")
	phone := openDevice(t, st, bob, phoneKey, "phone")
	carol := openClient(t, st, st.NewUser(t, "carol"))
	send := func(from *testClient, body []byte) {
		t.Helper()
		p, err := from.publishIn(ctx, []target{{rcpt: Recipient{Key: phoneKey.PublicKey()}, person: bob.Key}}, Message{Kind: KindSyncKeys, Body: body}, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	rejected := func(n uint64) {
		t.Helper()
		receiveUntil(t, phone, "the refusal", func(int) bool { return phone.Stats().Rejected >= n })
		if k, q := storedKeys(t, phone); k != 0 || q != 0 || phone.EncryptionKey(0) != nil {
			t.Fatalf("after a refused sync-keys: %d keys, %d queued", k, q)
		}
	}

	// Another person, with bob's true keys (which it could not know).
	send(carol, keysBody(bob.Identity, 0))
	rejected(1)
	if !contains(phone.log.String(), ErrNotOwnDevice.Error()) {
		t.Fatal("the refusal does not say the sender is not an own device")
	}

	// An own device, with a key that is not bob's generation 0.
	var wrong keyRecord
	rand.Read(wrong.Private[:])
	send(laptop, marshalSyncKeys([]keyRecord{wrong}))
	rejected(2)
	if !contains(phone.log.String(), ErrKeyMismatch.Error()) {
		t.Fatal("the refusal does not say the key does not match")
	}

	// A generation the chain has not published: queued, not stored.
	mallory := stacktest.Identity("mallory")
	forged := keyRecord{Generation: 1}
	copy(forged.Private[:], mallory.EncryptionKey(1).Bytes())
	send(laptop, marshalSyncKeys([]keyRecord{forged}))
	receiveUntil(t, phone, "the queued keys", func(int) bool {
		_, q := storedKeys(t, phone)
		return q == 1
	})
	if phone.EncryptionKey(1) != nil {
		t.Fatal("a queued key is in use")
	}
	// The chain moves on to generation 2, skipping 1: the queued body is
	// checked against it and dropped.
	st.AppendLink(t, bob, sigchain.TypeSetEncryptionKey, sigchain.SetEncryptionKeyBody(bob.Identity.EncryptionKey(2).PublicKey(), 2))
	phone.applyQueuedKeys(ctx)
	if k, q := storedKeys(t, phone); k != 0 || q != 0 {
		t.Fatalf("a forged generation 1: %d keys, %d queued", k, q)
	}
	// Bob's true keys beside a generation the chain skipped: refused
	// whole.
	send(laptop, keysBody(bob.Identity, 0, 1, 2))
	rejected(3)

	// The true generations are taken.
	send(laptop, keysBody(bob.Identity, 0, 2))
	receiveUntil(t, phone, "the true keys", func(int) bool { return phone.EncryptionKey(2) != nil })
	if !sameKey(phone.EncryptionKey(2), bob.Identity.EncryptionKey(2)) || !sameKey(phone.EncryptionKey(0), bob.Identity.EncryptionKey(0)) || phone.EncryptionKey(1) != nil {
		t.Fatal("the true keys were not stored as they are")
	}
}
