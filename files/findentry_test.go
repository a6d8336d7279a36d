package files

import (
	"errors"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/files/format"
	"github.com/multiformats/go-multibase"
)

// blobCID is the CID of the blob of one byte b.
func blobCID(t *testing.T, b byte) cid.Cid {
	t.Helper()
	tr, err := format.BuildTree(strings.NewReader(string([]byte{b})))
	if err != nil {
		t.Fatal(err)
	}
	return tr.CID()
}

// A CID names an entry in every text form ParseCID accepts; a name that
// is not a CID, or a CID of nothing shared, names nothing.
func TestFindEntryComparesCIDs(t *testing.T) {
	pub := format.Entry{Name: "a.txt", Size: 1, CID: blobCID(t, 1)}
	sealed := format.SealedEntry{CID: blobCID(t, 2), BlobSize: 1}
	m := &format.Manifest{Public: []format.Entry{pub}, Sealed: []format.SealedEntry{sealed}}
	b58, err := pub.CID.StringOfBase(multibase.Base58BTC)
	if err != nil {
		t.Fatal(err)
	}
	for _, form := range []string{pub.CID.String(), strings.ToUpper(pub.CID.String()), b58} {
		if e, err := findEntry("alice", m, m.Public, form); err != nil || e.Name != "a.txt" {
			t.Errorf("%s: %+v, %v", form, e, err)
		}
	}
	if _, err := findEntry("alice", m, m.Public, strings.ToUpper(sealed.CID.String())); !errors.Is(err, ErrForbidden) {
		t.Errorf("a sealed entry's CID upper-cased: %v", err)
	}
	for _, what := range []string{"b.txt", blobCID(t, 3).String(), "Bnot-a-cid"} {
		if _, err := findEntry("alice", m, m.Public, what); !errors.Is(err, ErrNotShared) {
			t.Errorf("%s: %v", what, err)
		}
	}
}
