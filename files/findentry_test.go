package files

import (
	"errors"
	"strings"
	"testing"

	"github.com/multiformats/go-multibase"
)

// A CID names an entry in every text form ParseCID accepts; a name that
// is not a CID, or a CID of nothing shared, names nothing.
func TestFindEntryComparesCIDs(t *testing.T) {
	pub := Entry{Name: "a.txt", Size: 1, CID: blobCID(1, Hash{1})}
	sealed := SealedEntry{CID: blobCID(2, Hash{2}), BlobSize: 2}
	m := &Manifest{Public: []Entry{pub}, Sealed: []SealedEntry{sealed}}
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
	for _, what := range []string{"b.txt", blobCID(3, Hash{3}).String(), "Bnot-a-cid"} {
		if _, err := findEntry("alice", m, m.Public, what); !errors.Is(err, ErrNotShared) {
			t.Errorf("%s: %v", what, err)
		}
	}
}
