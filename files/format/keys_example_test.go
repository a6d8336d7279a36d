package format_test

import (
	"bytes"
	"crypto/ecdh"
	"fmt"
	"time"

	"github.com/kez-lat/kez-chat/files/format"
	"github.com/kez-lat/kez-chat/kez"
)

// generations is a viewer's keys by generation, as a linked device holds
// them (chat.Keyring is one).
type generations map[uint32]*ecdh.PrivateKey

func (g generations) EncryptionKey(gen uint32) *ecdh.PrivateKey { return g[gen] }

// A private entry opens for a viewer holding the recipient's key of the
// generation it was wrapped to, and for no other generation.
func ExampleVisibleTo() {
	bob, _, _ := kez.NewIdentity()
	key, _ := format.NewFileKey()
	plain := []byte("for bob")
	var enc bytes.Buffer
	if _, err := format.Encrypt(&enc, bytes.NewReader(plain), key); err != nil {
		panic(err)
	}
	tree, err := format.BuildTree(&enc)
	if err != nil {
		panic(err)
	}
	var m format.Manifest
	e := format.Entry{Name: "plan.txt", Size: int64(len(plain)), ModTime: time.Unix(1767225600, 0), CID: tree.CID(), Key: key}
	if err := m.AddPrivate(e, []format.Recipient{format.RecipientOf(bob, 1)}); err != nil {
		panic(err)
	}
	for _, held := range []generations{
		{0: bob.EncryptionKey(0)},                          // a device revoked before generation 1
		{0: bob.EncryptionKey(0), 1: bob.EncryptionKey(1)}, // a device that got generation 1
	} {
		fmt.Println(len(held), "generations:", len(format.VisibleTo(&m, held)), "entries")
	}
	// Output:
	// 1 generations: 0 entries
	// 2 generations: 1 entries
}
