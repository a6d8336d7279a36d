package handles_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/sigchain/sqlitestore"
)

// An operator runs a sig-server and a chat-server for kez.lat; alice
// registers (eldest link, then the claim) and a client resolves her handle
// to a key it has verified against her sigchain.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "handles-example")
	defer os.RemoveAll(dir)

	// The operator's side.
	chains, _ := sqlitestore.Open(filepath.Join(dir, "sig.db"))
	defer chains.Close()
	sigServer := httptest.NewServer(sigchain.NewHandler(chains))
	defer sigServer.Close()
	registry, _ := handles.OpenSQLite(filepath.Join(dir, "handles.db"))
	defer registry.Close()
	server, err := handles.NewServer(handles.ServerConfig{
		Domain:    "kez.lat",
		Store:     registry,
		SigServer: &sigchain.Client{BaseURL: sigServer.URL},
	})
	if err != nil {
		panic(err)
	}
	chatServer := httptest.NewServer(server)
	defer chatServer.Close()

	// Alice registers: her chain's eldest link names the handle, then she
	// claims it with a signature of her key.
	alice, _ := kez.FromWords("abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon art")
	h, err := handles.Parse("@alice@kez.lat", "")
	if err != nil {
		panic(err)
	}
	if _, err := handles.Register(ctx, alice, h, handles.RegisterOptions{ServerURL: chatServer.URL, SigServerURL: sigServer.URL}); err != nil {
		panic(err)
	}

	// Anyone resolves her.
	r := &handles.Resolver{DefaultDomain: "kez.lat", HomeServer: chatServer.URL}
	res, err := r.Resolve(ctx, "alice")
	if err != nil {
		panic(err)
	}
	fmt.Println(res.Handle.Display())
	fmt.Println(res.Key)
	fmt.Println(res.Key.Fingerprint())

	// A look-alike is refused with a reason.
	_, err = r.Resolve(ctx, "\u0430lice")
	fmt.Println(handles.ReasonOf(err))
	// Output:
	// @alice@kez.lat
	// UBEZRRVSGPSBY27Q4OUWJ2U276ERUCM7QPE5Y5BAWKI7BGJHDCPONM47
	// 86216 15022 29224 47353 09025 04313
	// homoglyph
}
