package chat_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"time"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/files/format"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
)

// Alice offers bob's group a file she shared with it (files.ToGroup
// returns the offer as SharedFile.Offer; here it is made by hand); bob's
// client records the offer, its key included, which files.WithFileKey
// fetches with.
func ExampleClient_SendGroupFile() {
	st, users, stop := stacktest.ForExample(stacktest.Options{}, "alice", "bob")
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	open := func(u *stacktest.User) *chat.Client {
		id, err := kez.LoadIdentity(u.Home, nil)
		if err != nil {
			log.Fatal(err)
		}
		c, err := chat.Open(ctx, chat.Config{Client: client.Config{
			Identity: id, Home: u.Home, NATSURL: st.NATSURL, ServerURL: st.ServerURL,
		}})
		if err != nil {
			log.Fatal(err)
		}
		return c
	}
	alice, bob := open(users[0]), open(users[1])
	defer alice.Close()
	defer bob.Close()
	if _, err := alice.CreateGroup(ctx, "team", ""); err != nil {
		log.Fatal(err)
	}
	if err := alice.AddGroupMembers(ctx, "team", "bob"); err != nil {
		log.Fatal(err)
	}

	// The file, encrypted under a fresh key, and its blob's CID.
	key, _ := format.NewFileKey()
	plain := []byte("meet at noon\n")
	var enc bytes.Buffer
	if _, err := format.Encrypt(&enc, bytes.NewReader(plain), key); err != nil {
		log.Fatal(err)
	}
	tree, err := format.BuildTree(&enc)
	if err != nil {
		log.Fatal(err)
	}
	offer := format.GroupFile{CID: tree.CID(), Key: key, Name: "plan.txt", Size: int64(len(plain)), MediaType: "text/plain", ModTime: time.Now()}
	if _, err := alice.SendGroupFile(ctx, "team", offer); err != nil {
		log.Fatal(err)
	}

	if _, err := bob.Sync(ctx); err != nil {
		log.Fatal(err)
	}
	files, err := bob.GroupFiles(ctx, "team")
	if err != nil {
		log.Fatal(err)
	}
	for _, f := range files {
		fmt.Printf("%s offered %s (%d bytes) in %s; the key matches: %v\n",
			f.OwnerHandle, f.Offer.Name, f.Offer.Size, f.Message.Group, f.Offer.Key == key)
	}
	// Output:
	// alice@kez.test offered plan.txt (13 bytes) in team@kez.test; the key matches: true
}
