package sqlitestore_test

import (
	"path/filepath"
	"testing"

	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/sigchain/sqlitestore"
	"github.com/kez-lat/kez-chat/sigchain/storetest"
)

// TestContract runs the store contract that every sigchain.Store keeps
// (package sigchain/storetest) against the SQLite store; the second
// handle is a second Store on the file, as a second process would have.
func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) (sigchain.Store, func() sigchain.Store) {
		path := filepath.Join(t.TempDir(), "sig.db")
		open := func() sigchain.Store {
			s, err := sqlitestore.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
		return open(), open
	})
}
