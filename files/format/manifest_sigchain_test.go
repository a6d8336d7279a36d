package format

import (
	"bytes"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/sigchain"
)

// TestManifestInSigchain: a manifest is a body the sigchain accepts as a
// set_shared_files link, and what a reader gets back from the verified
// chain decodes to the same entries.
func TestManifestInSigchain(t *testing.T) {
	if MaxManifestSize != sigchain.MaxSharedFilesBodySize {
		t.Fatalf("MaxManifestSize %d != sigchain.MaxSharedFilesBodySize %d", MaxManifestSize, sigchain.MaxSharedFilesBodySize)
	}
	owner, bob := testIdentity(t, seedOwner), testIdentity(t, seedBob)
	key := vectorKey(3)
	enc := encryptBytes(t, key, []byte("for bob <&> only"))
	var m Manifest
	must(t, m.AddPublic(Entry{Name: "a <b> & c.txt", Size: 3, CID: treeOf(t, []byte("abc")).CID(), MediaType: "text/plain"}))
	must(t, m.AddPrivate(Entry{Name: "bob.txt", Size: 16, CID: treeOf(t, enc).CID(), Key: key}, []Recipient{RecipientOf(bob, 0)}))
	body, err := m.Encode()
	must(t, err)
	canon, err := sigchain.Canonicalize(body)
	if err != nil || !bytes.Equal(canon, body) {
		t.Fatalf("the manifest is not canonical JSON for the sigchain: %v\n%s\n%s", err, body, canon)
	}
	now := time.Now()
	eldest, err := sigchain.NewLink(owner, nil, sigchain.TypeEldest,
		sigchain.EldestBody(owner.PublicKey(), owner.EncryptionKey(0).PublicKey(), 0, ""), now)
	must(t, err)
	st, err := sigchain.Verify([]*sigchain.Link{eldest})
	must(t, err)
	share, err := sigchain.NewLink(owner, st, sigchain.TypeSetSharedFiles, body, now)
	must(t, err)
	st, err = sigchain.Verify([]*sigchain.Link{eldest, share})
	must(t, err)
	got, err := DecodeManifest(st.SharedFiles())
	must(t, err)
	v := Visible(got, bob)
	if len(v) != 2 || v[0].Name != "a <b> & c.txt" || v[1].Name != "bob.txt" || v[1].Key != key {
		t.Fatalf("bob sees %+v", v)
	}
}
