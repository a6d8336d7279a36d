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
	"github.com/kez-lat/kez-chat/group"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
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

// Alice shares a report publicly and a payslip with bob only, and stays
// online; Bob lists her files (from her sigchain) and fetches both peer to
// peer. A deployment of its own runs for the example; a program is given
// the addresses (KEZ_SERVER, NATS_URL) and the user's KEZ_HOME, and each
// user runs on their own machine.
func ExampleOpen() {
	st, users, stop := stacktest.ForExample(stacktest.Options{}, "alice", "bob")
	defer stop()
	ctx := context.Background()
	open := func(u *stacktest.User) *files.Sharing {
		id, err := kez.LoadIdentity(u.Home, nil)
		if err != nil {
			panic(err)
		}
		// The chat-server names the handle domain and the sig-server.
		s, err := files.Open(ctx, files.Config{
			Client:      client.Config{Identity: id, Home: u.Home, NATSURL: st.NATSURL, ServerURL: st.ServerURL},
			ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, // default: every interface
		})
		if err != nil {
			panic(err)
		}
		return s
	}
	alice, bob := open(users[0]), open(users[1])
	defer bob.Close()

	dir, _ := os.MkdirTemp("", "files-example")
	defer os.RemoveAll(dir)
	report, payslip := filepath.Join(dir, "report.pdf"), filepath.Join(dir, "payslip.txt")
	os.WriteFile(report, bytes.Repeat([]byte("report "), 1000), 0o600)
	os.WriteFile(payslip, []byte("salary: 3000\n"), 0o600)
	if _, err := alice.Share(ctx, report); err != nil {
		panic(err)
	}
	// Private: only bob (and alice's own devices) can see or fetch it.
	if _, err := alice.Share(ctx, payslip, files.To("bob")); err != nil {
		panic(err)
	}
	serving := make(chan error, 1)
	go func() { serving <- alice.Serve(ctx) }() // answer fetchers until ctx ends or alice closes

	// On Bob's machine, with his own Sharing:
	list, err := bob.Browse(ctx, "alice")
	if err != nil {
		panic(err)
	}
	for _, e := range list {
		fmt.Println(e.Name, e.Size, "private:", e.Private)
	}
	for _, name := range []string{"report.pdf", "payslip.txt"} {
		got, err := bob.Fetch(ctx, "alice", name, filepath.Join(dir, "bob-"+name),
			files.WithWait(time.Minute, nil)) // alice may not be online yet
		if errors.Is(err, files.ErrOwnerOffline) {
			fmt.Println(err) // "files: alice@kez.test did not come online within 1m0s"
			return
		}
		if err != nil {
			panic(err)
		}
		fmt.Println("fetched", filepath.Base(got.Path), got.Size)
	}

	// Alice goes offline once the transfers under way are done.
	if err := alice.Shutdown(ctx); err != nil {
		panic(err)
	}
	fmt.Println("alice's Serve:", <-serving)
	// Output:
	// report.pdf 7000 private: false
	// payslip.txt 13 private: true
	// fetched bob-report.pdf 7000
	// fetched bob-payslip.txt 13
	// alice's Serve: files: the sharing is closed
}

// Alice makes a group with bob, shares a plan with its members, and
// serves it; bob, a member, fetches it with the offer (the file's key,
// which a chat client sends to the group, chat.Client.SendGroupFile, and
// lists on the members' side, chat.Client.GroupFiles). Someone added to
// the group later never reads the offer and, like someone removed from
// it, would be refused the file.
func ExampleToGroup() {
	st, users, stop := stacktest.ForExample(stacktest.Options{}, "alice", "bob")
	defer stop()
	ctx := context.Background()
	open := func(u *stacktest.User) *files.Sharing {
		s, err := files.Open(ctx, files.Config{
			Client:      client.Config{Identity: u.Identity, Home: u.Home, NATSURL: st.NATSURL, ServerURL: st.ServerURL},
			ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
		})
		if err != nil {
			panic(err)
		}
		return s
	}
	alice, bob := open(users[0]), open(users[1])
	defer alice.Close()
	defer bob.Close()

	// The group's chain (a chat client does this: chat.Client.CreateGroup
	// and AddGroupMembers).
	gc := group.NewClient(st.SigServerURL, nil)
	create, err := group.NewCreate(users[0].Identity, users[0].Key, "team@kez.test", "alice@kez.test", "", time.Now())
	if err != nil {
		panic(err)
	}
	if err := gc.Append(ctx, create); err != nil {
		panic(err)
	}
	g, err := group.Verify(ctx, [][]byte{create.Bytes()}, nil)
	if err != nil {
		panic(err)
	}
	add, err := group.NewLink(users[0].Identity, users[0].Key, g, group.TypeAdd,
		group.AddBody([]group.NewMember{{Key: users[1].Key, Handle: "bob@kez.test", Role: group.RoleMember}}), time.Now())
	if err != nil {
		panic(err)
	}
	if err := gc.Append(ctx, add); err != nil {
		panic(err)
	}

	dir, _ := os.MkdirTemp("", "files-example")
	defer os.RemoveAll(dir)
	plan := filepath.Join(dir, "plan.txt")
	os.WriteFile(plan, []byte("meet at noon\n"), 0o600)
	sf, err := alice.Share(ctx, plan, files.ToGroup(files.Group{Name: "team"}))
	if err != nil {
		panic(err)
	}
	fmt.Println("shared", sf.Name, "with", sf.Group, "offering", sf.Offer.Name, sf.Offer.Size, "bytes")
	if err := alice.StartServing(ctx); err != nil {
		panic(err)
	}

	// Without the offer, bob does not even see the file.
	list, _ := bob.Browse(ctx, "alice")
	fmt.Println("bob browses", len(list), "files")
	offer := *sf.Offer // what bob's chat client would have read in the group
	got, err := bob.Fetch(ctx, "alice", offer.Name, filepath.Join(dir, "bob-plan.txt"), files.WithFileKey(offer))
	if err != nil {
		panic(err)
	}
	b, _ := os.ReadFile(got.Path)
	fmt.Printf("bob fetched %s: %q\n", got.Name, b)
	// Output:
	// shared plan.txt with team@kez.test offering plan.txt 13 bytes
	// bob browses 0 files
	// bob fetched plan.txt: "meet at noon\n"
}
