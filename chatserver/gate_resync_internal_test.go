package chatserver

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/handles/storetest"
	"github.com/kez-lat/kez-chat/kez"
)

// A flood of revocation notices (an operator's admin login can publish
// them) costs one wait for the registry's view a round, not one each, and
// holds at most maxResync keys; the keys noticed are forgotten again once
// the view has caught up.
func TestRevocationNoticeFloodSyncsOnce(t *testing.T) {
	called, release := make(chan struct{}), make(chan struct{})
	g := &gate{now: time.Now, known: newTracker[knownEntry](10 * maxResync)}
	g.syncDir = func(context.Context) error {
		called <- struct{}{}
		<-release
		return nil
	}
	first := storetest.Key(0)
	g.forgetAfterSync(first)
	<-called // the first round waits for the view
	keys := make([]kez.PublicKey, 3*maxResync)
	for i := range keys {
		keys[i] = storetest.Key(i + 1)
		g.forgetAfterSync(keys[i])
	}
	g.resyncMu.Lock()
	held := len(g.resyncKeys)
	g.resyncMu.Unlock()
	if held != maxResync {
		t.Fatalf("%d keys held for the next round; want %d", held, maxResync)
	}
	// What the gate learned of a noticed key meanwhile is forgotten after
	// the round that follows.
	now := time.Now()
	g.known.with(keys[0].String(), now, func(e *knownEntry) {
		*e = knownEntry{state: keyRegistered, until: now.Add(time.Hour)}
	})
	release <- struct{}{}
	<-called // the second round serves every key noticed meanwhile
	release <- struct{}{}
	for {
		g.resyncMu.Lock()
		done := !g.resyncing
		g.resyncMu.Unlock()
		if done {
			break
		}
		runtime.Gosched()
	}
	g.known.with(keys[0].String(), time.Now(), func(e *knownEntry) {
		if e.state == keyRegistered {
			t.Error("a noticed key's cached answer outlived the view's catching up")
		}
	})
}
