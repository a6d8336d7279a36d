package sqlitestore_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/sigchain/sqlitestore"
)

// A new device links to a person through a sig-server over a SQLite
// store: it posts its signed request, the person's primary install
// fetches it by the code the device shows, checks it and appends the
// add_device link, and the device learns whose it is.
func ExampleStore_linkDevice() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "kez-sig")
	defer os.RemoveAll(dir)
	st, err := sqlitestore.Open(filepath.Join(dir, "sig.db"))
	if err != nil {
		panic(err)
	}
	defer st.Close()
	srv := httptest.NewServer(sigchain.NewHandler(st, sigchain.WithLogger(slog.New(slog.DiscardHandler))))
	defer srv.Close()
	c := &sigchain.Client{BaseURL: srv.URL}

	// The person's chain.
	alice, _ := kez.FromWords("abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon art")
	now := time.Now()
	eldest, _ := sigchain.NewLink(alice, nil, sigchain.TypeEldest,
		sigchain.EldestBody(alice.PublicKey(), alice.EncryptionKey(0).PublicKey(), 0, "alice@kez.lat"), now)
	if err := c.Append(ctx, eldest); err != nil {
		panic(err)
	}
	chain, _ := sigchain.Verify([]*sigchain.Link{eldest})

	// The new device: a fresh key and its request.
	device, _, _ := kez.NewIdentity()
	req, _ := sigchain.NewLinkRequest(device, "laptop", now)
	if err := c.PostLinkRequest(ctx, req); err != nil {
		panic(err)
	}
	code := req.Code().String() // shown on the new device, typed on the primary

	// The primary install: fetch by code, check, add.
	typed, _ := sigchain.ParseLinkCode(code)
	got, person, err := c.FetchLinkRequest(ctx, typed)
	if err != nil || got.CheckFresh(time.Now()) != nil {
		panic(err)
	}
	fmt.Println("request from:", got.Name(), "added yet:", !person.IsZero())
	add, _ := sigchain.NewLink(alice, chain, sigchain.TypeAddDevice, sigchain.AddDeviceBody(got), time.Now())
	if err := c.Append(ctx, add); err != nil {
		panic(err)
	}

	// The new device polls with its code and learns its person.
	_, person, _ = c.FetchLinkRequest(ctx, typed)
	fmt.Println("person is alice:", person == alice.PublicKey())
	p, revoked, _ := c.DevicePerson(ctx, device.PublicKey())
	fmt.Println("index says alice:", p == alice.PublicKey(), "revoked:", revoked)
	// Output:
	// request from: laptop added yet: false
	// person is alice: true
	// index says alice: true revoked: false
}
