package chat

import (
	"database/sql"
	"testing"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
)

// updatePin's write runs on the database's writer goroutine; a pin another
// refresh records meanwhile (under c.mu) must not be read there. The test
// orders the goroutines so that the writer runs updatePin's transaction
// while another goroutine writes the pin under c.mu, with no
// happens-before edge between the two: the race detector reports a read of
// the shared contact in the transaction whatever the interleaving.
func TestUpdatePinDoesNotReadTheSharedPin(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice := openClient(t, st, st.NewUser(t, "alice"))
	st.NewUser(t, "bob")
	ctx := testCtx(t)
	mustAdd(t, alice, "bob")
	cs, err := alice.contact(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	alice.mu.Lock()
	pinned, key := cs.state, cs.c.Key
	alice.mu.Unlock()
	links, err := alice.sig.Fetch(ctx, key, 0)
	if err != nil {
		t.Fatal(err)
	}

	// The writer is held in a first batch.
	gate1, in1 := make(chan struct{}), make(chan struct{})
	alice.db.writeAsync(func(*sql.Tx) error { close(in1); <-gate1; return nil }, nil)
	<-in1
	// updatePin queues its transaction behind it; it is taken off the
	// queue and put back followed by a second hold, so that the next
	// batch is [updatePin's, hold].
	done := make(chan error, 1)
	go func() { done <- alice.updatePin(ctx, cs, pinned, links, "") }()
	op := <-alice.db.ops
	gate2 := make(chan struct{})
	alice.db.ops <- op
	alice.db.ops <- writeOp{fn: func(*sql.Tx) error { <-gate2; return nil }}
	close(gate1)
	// Another refresh records a pin, under c.mu, while the writer runs
	// updatePin's transaction (or before it: no order is set).
	wrote := make(chan struct{})
	go func() {
		alice.mu.Lock()
		cs.c.Pin = pinned.Pin()
		alice.mu.Unlock()
		close(wrote)
	}()
	<-wrote
	close(gate2)
	if err := <-done; err != nil {
		t.Fatalf("updatePin: %v", err)
	}
}
