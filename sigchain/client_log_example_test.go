package sigchain_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/exampletb"
	"github.com/kez-lat/kez-chat/internal/testenv/logtest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/translog"
)

// A Client with Log checks that every chain head it fetches is in the
// sig-server's transparency log, and refuses a server that stops proving
// it once its log was pinned.
func ExampleClient_log() {
	tb := exampletb.New()
	defer tb.Close()
	srv := logtest.Start(tb, logtest.Options{}) // a sig-server with a log
	ctx := context.Background()

	id, _ := kez.FromSeed(make([]byte, 64))
	eldest, _ := sigchain.NewLink(id, nil, sigchain.TypeEldest,
		sigchain.EldestBody(id.PublicKey(), id.EncryptionKey(0).PublicKey(), 0, ""), time.Now())
	if err := srv.Client(nil).Append(ctx, eldest); err != nil {
		panic(err)
	}

	c := &sigchain.Client{BaseURL: srv.URL, Log: &translog.Monitor{}} // pins in memory
	st, err := c.FetchVerified(ctx, id.PublicKey(), nil)
	fmt.Println("seqno", st.Seqno(), err)

	srv.Serve(srv.Unlogged) // the server drops its log
	_, err = c.FetchVerified(ctx, id.PublicKey(), nil)
	fmt.Println(errors.Is(err, translog.ErrNotLogged))
	// Output:
	// seqno 1 <nil>
	// true
}
