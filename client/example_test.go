package client_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"

	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/kez"
)

// A client needs an identity, a state folder and its chat-server's URL:
// the chat-server names its handle domain and its sig-server.
func ExampleConfig_Discover() {
	// A chat-server's /v1/info (here a stand-in; kez-chat-server serves it).
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"domain":"example.org","sig_server":"https://sig.example.org"}`)
	}))
	defer srv.Close()

	id, _, err := kez.NewIdentity()
	if err != nil {
		panic(err)
	}
	home, err := os.MkdirTemp("", "kez-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(home)

	cc, err := client.Config{Identity: id, Home: home, ServerURL: srv.URL}.Discover(context.Background())
	if err != nil {
		panic(err)
	}
	fmt.Println(cc.Domain, cc.SigServerURL)
	// Pass cc to chat.Open and files.Open (chat.Config{Client: cc}): both
	// then share its resolver, and the server is not asked again.
	// Output: example.org https://sig.example.org
}
