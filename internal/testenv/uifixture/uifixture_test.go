package uifixture

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/kez"
)

func TestWrite(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	o := Options{Contacts: 25, Messages: 230, Domain: "example.org", Now: now}
	f, err := Write(t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	id, err := kez.LoadIdentity(f.Home, nil)
	if err != nil || id.PublicKey() != f.Me {
		t.Fatalf("the identity does not load without a passphrase: %v", err)
	}
	var prof map[string]string
	b, err := os.ReadFile(filepath.Join(f.Home, "profile.json"))
	if err != nil || json.Unmarshal(b, &prof) != nil {
		t.Fatalf("profile: %s, %v", b, err)
	}
	if prof["key"] != f.Me.String() || prof["handle"] != "me@example.org" || prof["handle"] != f.Handle || prof["domain"] != "example.org" {
		t.Errorf("profile %v", prof)
	}
	if len(f.Handles) != 25 || f.Handles[0] != "ada@example.org" || f.Handles[20] != "ada1@example.org" {
		t.Fatalf("handles %v", f.Handles)
	}

	cs, err := chat.ReadConversations(context.Background(), f.Home)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 25 {
		t.Fatalf("%d conversations", len(cs))
	}
	total, unread := 0, 0
	for i, cv := range cs {
		if cv.Handle != f.Handles[i] || cv.Request || cv.Flag != chat.FlagNone || cv.Last == nil {
			t.Fatalf("row %d: %+v", i, cv)
		}
		if got, want := cv.Verified, i%5 == 0; got != want {
			t.Errorf("row %d verified %v", i, got)
		}
		// The newest message of conversation i is received, i minutes
		// before Now.
		if !cv.Last.Incoming || !cv.Last.SentAt.Equal(now.Add(-time.Duration(i)*time.Minute)) || cv.Last.Peer != cv.Peer || cv.Last.To != f.Me {
			t.Errorf("row %d last %+v", i, cv.Last)
		}
		want := 0
		if i%unreadEvery == 0 {
			want = 1 + i/unreadEvery%3
		}
		if cv.Unread != want {
			t.Errorf("row %d: %d unread, want %d", i, cv.Unread, want)
		}
		unread += cv.Unread
		total += 230 / 25
		if i < 230%25 {
			total++
		}
	}
	if total != 230 || unread == 0 {
		t.Errorf("%d messages, %d unread", total, unread)
	}

	// The same options give the same keys and handles.
	g, err := Write(t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	if g.Me != f.Me || !slices.Equal(g.Handles, f.Handles) {
		t.Error("two fixtures with the same options differ")
	}
	// A home already holding a history is not written over.
	if _, err := Write(f.Home, o); err == nil {
		t.Error("a second fixture was written into the same home")
	}
}

// Fewer messages than contacts: the contacts without any come last, by
// handle, and the fixture's Handles say so.
func TestWriteFewMessages(t *testing.T) {
	f, err := Write(t.TempDir(), Options{Contacts: 30, Messages: 3})
	if err != nil {
		t.Fatal(err)
	}
	if f.Handles[0] != "ada@kez.lat" || f.Handles[2] != "carol@kez.lat" || !slices.IsSorted(f.Handles[3:]) {
		t.Errorf("handles %v", f.Handles)
	}
}
