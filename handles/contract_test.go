package handles_test

import (
	"path/filepath"
	"testing"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/handles/storetest"
)

// TestSQLiteContract runs the registry contract that every handles.Store
// keeps (package handles/storetest) against the SQLite registry; the
// second handle is a second connection pool on the file, as a second
// process would have.
func TestSQLiteContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) (handles.Store, func() handles.Store) {
		path := filepath.Join(t.TempDir(), "handles.db")
		open := func() handles.Store {
			s, err := handles.OpenSQLite(path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
		return open(), open
	})
}
