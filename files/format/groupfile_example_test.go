package format_test

import (
	"bytes"
	"fmt"
	"time"

	"github.com/kez-lat/kez-chat/files/format"
	"github.com/kez-lat/kez-chat/kez"
)

// A file shared with a group: the manifest entry names the group and has
// no wraps; the offer, sent in the group, carries the key.
func ExampleManifest_AddGroup() {
	owner, _, _ := kez.NewIdentity()
	key, _ := format.NewFileKey()
	plain := []byte("meet at noon\n")
	var enc bytes.Buffer
	if _, err := format.Encrypt(&enc, bytes.NewReader(plain), key); err != nil {
		panic(err)
	}
	tree, err := format.BuildTree(&enc)
	if err != nil {
		panic(err)
	}
	gid := [32]byte{0xc7} // the group's ID (group.State.ID)
	offer := format.GroupFile{Group: gid, Owner: owner.PublicKey(), CID: tree.CID(), Key: key,
		Name: "plan.txt", Size: int64(len(plain)), ModTime: time.Unix(1767225600, 0)}

	var m format.Manifest
	if err := m.AddGroup(offer.Entry(), gid); err != nil {
		panic(err)
	}
	body, _ := m.Encode()
	fmt.Println("manifest version 2:", bytes.HasSuffix(body, []byte(`"version":2}`)))
	fmt.Println("entries the owner sees:", len(format.Visible(&m, owner)))

	b, err := offer.MarshalBinary()
	if err != nil {
		panic(err)
	}
	got, err := format.ParseGroupFile(b)
	if err != nil {
		panic(err)
	}
	se, _ := m.GroupEntry(got.CID)
	fmt.Println("offer:", got.Name, got.Size, "bytes; entry of the same group:", se.Group == got.Group)
	// Output:
	// manifest version 2: true
	// entries the owner sees: 0
	// offer: plan.txt 13 bytes; entry of the same group: true
}
