package chat_test

// The conversation list on a large history: 1,000 contacts and 100,000
// messages (internal/testenv/uifixture), read through an open client and
// without one (ReadConversations, what a UI draws its first screen from),
// beside a raw baseline on the same file: counting the messages.
//
//	go test -run XXX -bench Conversations -benchtime 20x ./chat/

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/internal/sqlitedb"
	"github.com/kez-lat/kez-chat/internal/testenv/uifixture"
	"github.com/kez-lat/kez-chat/kez"
)

func BenchmarkConversations(b *testing.B) {
	const contacts, messages = 1000, 100_000
	ctx := context.Background()
	f, err := uifixture.Write(b.TempDir(), uifixture.Options{Contacts: contacts, Messages: messages})
	if err != nil {
		b.Fatal(err)
	}

	b.Run("baseline-count", func(b *testing.B) {
		db, err := sqlitedb.OpenReadOnly(filepath.Join(f.Home, chat.DBFileName))
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		for b.Loop() {
			var n int
			if err := db.QueryRowContext(ctx, `SELECT count(*) FROM messages`).Scan(&n); err != nil || n != messages {
				b.Fatalf("%d messages, %v", n, err)
			}
		}
	})
	b.Run("ReadConversations", func(b *testing.B) {
		for b.Loop() {
			cs, err := chat.ReadConversations(ctx, f.Home)
			if err != nil || len(cs) != contacts {
				b.Fatalf("%d rows, %v", len(cs), err)
			}
		}
	})
	b.Run("Client", func(b *testing.B) {
		id, err := kez.LoadIdentity(f.Home, nil)
		if err != nil {
			b.Fatal(err)
		}
		c, err := chat.Open(ctx, chat.Config{Client: client.Config{Identity: id, Home: f.Home, Domain: "kez.lat"}})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		for b.Loop() {
			cs, err := c.Conversations(ctx)
			if err != nil || len(cs) != contacts {
				b.Fatalf("%d rows, %v", len(cs), err)
			}
		}
	})
}
