package filewords_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/cmd/kez/internal/filewords"
	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/files/format"
)

func ExampleSize() {
	fmt.Println(filewords.Size(512))
	fmt.Println(filewords.Size(1258291))
	// Output:
	// 512 B
	// 1.2 MiB
}

func ExampleFetched() {
	f := &files.Fetched{Entry: format.Entry{Name: "notes.txt", Size: 1258291}, Route: files.RouteDirect}
	fmt.Println(filewords.Fetched(f, "bob@kez.lat"))
	// Output: Fetched "notes.txt" (1.2 MiB) from bob@kez.lat directly.
}

// TestFactsQuoteNames: a name from someone else's list is quoted, so its
// control characters are escapes, not terminal commands.
func TestFactsQuoteNames(t *testing.T) {
	evil := "a\x1b[2Jb\nc"
	for _, s := range []string{
		filewords.NotShared(&files.NotSharedError{Owner: "bob@kez.lat", What: evil}),
		filewords.Changed(&files.ChangedError{Name: evil, Path: "/x"}),
		filewords.Fetched(&files.Fetched{Entry: format.Entry{Name: evil}}, "bob@kez.lat"),
	} {
		if strings.ContainsAny(s, "\x1b\n") {
			t.Errorf("%q holds a control character", s)
		}
	}
}

func TestOfflineUnreachable(t *testing.T) {
	if got := filewords.Offline(&files.OfflineError{Owner: "bob@kez.lat"}); got != "bob@kez.lat is offline" {
		t.Errorf("offline: %q", got)
	}
	if got := filewords.Offline(&files.OfflineError{Owner: "bob@kez.lat", Waited: 1500 * time.Millisecond}); got != "bob@kez.lat did not come online within 2s" {
		t.Errorf("offline after a wait: %q", got)
	}
	if got := filewords.Unreachable(&files.UnreachableError{Owner: "bob@kez.lat", Addrs: 2, Relays: 1}); !strings.HasSuffix(got, "try again later") {
		t.Errorf("unreachable: %q", got)
	}
	if got := filewords.NotFound(""); !strings.HasPrefix(got, "the owner no longer") {
		t.Errorf("not found: %q", got)
	}
}
