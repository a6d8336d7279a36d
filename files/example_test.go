package files_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/files/format"
	"github.com/kez-lat/kez-chat/kez"
)

// Alice shares a file; Bob fetches it from her node, verified chunk by
// chunk, into a file of his own.
func ExampleNode_Fetch() {
	dir, _ := os.MkdirTemp("", "kez-example")
	defer os.RemoveAll(dir)
	alice, _, _ := kez.NewIdentity()
	bob, _, _ := kez.NewIdentity()

	// Alice: hash the file and serve it.
	report := filepath.Join(dir, "report.pdf")
	os.WriteFile(report, bytes.Repeat([]byte("KEZ "), 100_000), 0o600)
	shared := files.NewFileSource()
	tree, err := shared.AddFile(report)
	if err != nil {
		panic(err)
	}
	aliceNode, err := files.NewNode(files.NodeConfig{
		Identity:    alice,
		ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
		Source:      shared,
	})
	if err != nil {
		panic(err)
	}
	defer aliceNode.Close()

	// Alice's manifest (the body of her set_shared_files sigchain link).
	var m format.Manifest
	m.AddPublic(format.Entry{Name: "report.pdf", Size: tree.Size(), CID: tree.CID(),
		MediaType: "application/pdf", ModTime: time.Now()})
	body, _ := m.Encode()

	// Bob: read the manifest, then fetch from Alice's key and addresses
	// (which, in KEZ, her client announces over NATS).
	got, _ := format.DecodeManifest(body)
	entry := format.Visible(got, bob)[0]
	bobNode, err := files.NewNode(files.NodeConfig{Identity: bob, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}})
	if err != nil {
		panic(err)
	}
	defer bobNode.Close()
	dst := filepath.Join(dir, "bob-"+entry.Name)
	err = bobNode.Fetch(context.Background(), files.OwnerInfo(alice.PublicKey(), aliceNode.Addrs()...), entry.CID, dst,
		files.WithProgress(func(verified, total int64) { /* show progress */ }))
	if err != nil {
		panic(err)
	}
	a, _ := os.ReadFile(report)
	b, _ := os.ReadFile(dst)
	fmt.Println(entry.Name, len(b), "bytes, identical:", bytes.Equal(a, b))
	// Output: report.pdf 400000 bytes, identical: true
}

// Alice shares a report publicly and stays online; Bob lists her files and
// fetches it. Each program runs on its own machine; the servers are the
// user's chat-server and NATS (KEZ_SERVER, NATS_URL).
func ExampleOpen() {
	ctx := context.Background()
	alice, _ := kez.LoadIdentity("/home/alice/.config/kez", nil)
	// The chat-server names the handle domain and the sig-server.
	sharing, err := files.Open(ctx, files.Config{Client: client.Config{
		Identity:  alice,
		Home:      "/home/alice/.config/kez",
		NATSURL:   "nats://nats.kez.lat:4222",
		ServerURL: "https://kez.lat",
	}})
	if err != nil {
		panic(err)
	}
	defer sharing.Close()
	if _, err := sharing.Share(ctx, "report.pdf"); err != nil {
		panic(err)
	}
	// Private: only bob (and alice's own devices) can see or fetch it.
	if _, err := sharing.Share(ctx, "salary.xlsx", files.To("bob@kez.lat")); err != nil {
		panic(err)
	}
	go sharing.Serve(ctx) // answer fetchers until ctx ends

	// On Bob's machine, with his own Sharing:
	var bob *files.Sharing
	list, _ := bob.Browse(ctx, "alice@kez.lat")
	for _, e := range list {
		fmt.Println(e.Name, e.Size, e.Private)
	}
	got, err := bob.Fetch(ctx, "alice@kez.lat", "report.pdf", "",
		files.WithWait(0, nil), // alice may not be online yet
		files.WithProgress(func(verified, total int64) { fmt.Printf("\r%d/%d", verified, total) }))
	if errors.Is(err, files.ErrOwnerOffline) {
		fmt.Println(err) // "alice@kez.lat is offline; ask them to run kez serve, or use --wait"
	}
	fmt.Println("saved", got.Path)
}
