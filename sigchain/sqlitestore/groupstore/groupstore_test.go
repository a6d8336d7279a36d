package groupstore_test

import (
	"path/filepath"
	"testing"

	gtest "github.com/kez-lat/kez-chat/group/storetest"
	"github.com/kez-lat/kez-chat/sigchain/sqlitestore"
	"github.com/kez-lat/kez-chat/sigchain/sqlitestore/groupstore"
)

// TestContract runs the group store contract (package group/storetest)
// against the SQLite store; the second handle is a second sqlitestore on
// the file, as a second process would have.
func TestContract(t *testing.T) {
	gtest.Run(t, func(t *testing.T) (gtest.Stores, func() gtest.Stores) {
		path := filepath.Join(t.TempDir(), "sig.db")
		open := func() gtest.Stores {
			s, err := sqlitestore.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return gtest.Stores{Groups: groupstore.New(s), Chains: s}
		}
		return open(), open
	})
}
