package handles_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"time"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/sigchain/sqlitestore"
)

// Alice links her laptop: its link request (signed by the laptop's key)
// goes into her add_device link, which she appends to her chain and sends
// to the chat-server's registry, which then admits the laptop's key as
// hers; her revoke_device link ends that for good.
func ExampleClient_RegisterDevice() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "handles-devices-example")
	defer os.RemoveAll(dir)
	chains, _ := sqlitestore.Open(filepath.Join(dir, "sig.db"))
	defer chains.Close()
	sigServer := httptest.NewServer(sigchain.NewHandler(chains))
	defer sigServer.Close()
	registry, _ := handles.OpenSQLite(filepath.Join(dir, "handles.db"))
	defer registry.Close()
	server, _ := handles.NewServer(handles.ServerConfig{Domain: "kez.lat", Store: registry, SigServer: &sigchain.Client{BaseURL: sigServer.URL}})
	chatServer := httptest.NewServer(server)
	defer chatServer.Close()

	alice, _, _ := kez.NewIdentity()
	reg, err := handles.Register(ctx, alice, handles.Handle{Name: "alice", Domain: "kez.lat"},
		handles.RegisterOptions{ServerURL: chatServer.URL, SigServerURL: sigServer.URL})
	if err != nil {
		panic(err)
	}
	sig := &sigchain.Client{BaseURL: sigServer.URL}
	appendLink := func(st *sigchain.State, typ string, body []byte) (*sigchain.State, []byte) {
		l, err := sigchain.NewLink(alice, st, typ, body, time.Now())
		if err != nil {
			panic(err)
		}
		if err := sig.Append(ctx, l); err != nil {
			panic(err)
		}
		next, _ := st.Extend([]*sigchain.Link{l})
		return next, l.Bytes()
	}

	laptop, _, _ := kez.NewIdentity()
	req, _ := sigchain.NewLinkRequest(laptop, "laptop", time.Now())
	st, link := appendLink(reg.Chain, sigchain.TypeAddDevice, sigchain.AddDeviceBody(req))
	c := &handles.Client{BaseURL: chatServer.URL}
	info, created, err := c.RegisterDevice(ctx, link)
	fmt.Println(info.Handle, info.Name, created, err)
	rec, _ := registry.LookupKey(ctx, laptop.PublicKey())
	fmt.Println("the laptop logs in as", rec.Handle, rec.Device == laptop.PublicKey())

	_, revoke := appendLink(st, sigchain.TypeRevokeDevice, sigchain.RevokeDeviceBody(laptop.PublicKey()))
	info, _, _ = c.RegisterDevice(ctx, revoke)
	fmt.Println("revoked:", info.Revoked)
	_, err = registry.LookupKey(ctx, laptop.PublicKey())
	fmt.Println(errors.Is(err, handles.ErrDeviceRevoked))
	_, _, err = c.RegisterDevice(ctx, link) // the old add link, replayed
	fmt.Println(errors.Is(err, handles.ErrDeviceRevoked))
	// Output:
	// alice@kez.lat laptop true <nil>
	// the laptop logs in as alice@kez.lat true
	// revoked: true
	// true
	// true
}
