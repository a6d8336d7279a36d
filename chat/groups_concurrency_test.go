package chat

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
)

// TestGroupSendsPerGroup: sending to one group does not wait for a send
// to another: with group one's sender-key work held, a message to group
// two goes out (its key distributed and its envelope published) while
// one's waits; then sends to both groups from several goroutines at
// once all arrive (run with -race).
func TestGroupSendsPerGroup(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice := openClient(t, st, st.NewUser(t, "alice"))
	bob := openClient(t, st, st.NewUser(t, "bob"))
	ctx := testCtx(t)
	one, two := "one@"+st.Domain, "two@"+st.Domain
	for _, g := range []string{"one", "two"} {
		if _, err := alice.CreateGroup(ctx, g, ""); err != nil {
			t.Fatal(err)
		}
		if err := alice.AddGroupMembers(ctx, g, "bob"); err != nil {
			t.Fatal(err)
		}
	}
	for _, g := range []string{one, two} {
		waitGroup(t, bob, g, func(g *Group) bool { return len(g.Members) == 2 })
	}

	gs := alice.groups.get(one)
	gs.send.Lock()
	held := true
	defer func() {
		if held {
			gs.send.Unlock()
		}
	}()
	doneOne := make(chan error, 1)
	go func() {
		_, err := alice.SendGroup(ctx, "one", "to one, after the wait")
		doneOne <- err
	}()
	doneTwo := make(chan error, 1)
	go func() {
		_, err := alice.SendGroup(ctx, "two", "to two, meanwhile")
		doneTwo <- err
	}()
	select {
	case err := <-doneTwo:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a send to group two waited for group one's")
	}
	select {
	case err := <-doneOne:
		t.Fatalf("the send to group one did not wait for its group's lock: %v", err)
	default:
	}
	held = false
	gs.send.Unlock()
	if err := <-doneOne; err != nil {
		t.Fatal(err)
	}
	waitGroupText(t, bob, two, "to two, meanwhile")
	waitGroupText(t, bob, one, "to one, after the wait")

	var wg sync.WaitGroup
	for w := range 4 {
		g := []string{"one", "two"}[w%2]
		wg.Go(func() {
			for i := range 3 {
				if _, err := alice.SendGroup(ctx, g, fmt.Sprintf("%s %d/%d", g, w, i)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	for w := range 4 {
		g := []string{one, two}[w%2]
		for i := range 3 {
			waitGroupText(t, bob, g, fmt.Sprintf("%s %d/%d", []string{"one", "two"}[w%2], w, i))
		}
	}
}
