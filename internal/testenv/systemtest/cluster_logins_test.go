package systemtest

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/chatserver"
	"github.com/nats-io/nats.go"
)

// TestScaleOutLogins is TestScaleOut's deployment and load with logins
// in a loop: 200 registered users log in and out continuously while the
// node leading the registry's bucket is killed (SIGKILL) and one
// chat-server stopped. The remaining replica answers them from its view
// of the registry, so the refusal window (first refused login to last)
// stays within 2 s (the target is none), and no acknowledged message is
// lost (runLoad).
func TestScaleOutLogins(t *testing.T) {
	sc := loadScale{clients: 10, messages: 10, contacts: 2, cutEvery: 100 * time.Millisecond}
	loopers := 200
	if raceEnabled {
		loopers = 40 // the race detector slows the callout down several times
	}
	sys := startSystem(t, sysOptions{cluster: true, jetstream: true, chatReplicas: 2, ackWait: 2 * time.Second})
	users := sys.registerMany(t, "loop", loopers)
	for _, srv := range sys.chats {
		if err := srv.SyncRegistry(testCtx(t, 30*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	killed := sys.nodeOf(t, registryStream)

	ll := &loginLoops{rounds: make([]int, loopers)}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	halt := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(halt)
	var killedAt time.Time
	chaos := func() {
		// The loops start once runLoad's clients are open, each login at
		// most every loginEvery.
		for i, u := range users {
			wg.Go(func() { ll.loop(sys, i, u, stop) })
		}
		ll.waitAll(1) // every user logged in at least once before
		killedAt = time.Now()
		sys.cluster.KillNode(killed)
		sys.stopChat(1)
		// Past the registry's election (5–13 s), and every user logged in
		// twice more since the kill.
		base := ll.minRounds()
		ll.waitAll(base + 2)
		for time.Since(killedAt) < 15*time.Second {
			ll.waitAll(ll.minRounds() + 1)
		}
		halt()
	}
	f := runLoad(t, sys, sc, 11, chaos)
	if ll.minRounds() < 3 {
		t.Fatalf("a user logged in only %d times", ll.minRounds())
	}

	ll.mu.Lock()
	defer ll.mu.Unlock()
	window, refusals := time.Duration(0), "none refused"
	if ll.refused > 0 {
		window = ll.lastRefused.Sub(ll.firstRefused)
		refusals = fmt.Sprintf("%d refused (%v; first other: %v) from %s to %s after the kill", ll.refused, ll.kinds, ll.firstOther,
			ll.firstRefused.Sub(killedAt).Round(time.Millisecond), ll.lastRefused.Sub(killedAt).Round(time.Millisecond))
	}
	t.Logf("scale-out logins: %d users logging in and out; node %s (registry leader) killed and chat-server 1 stopped under load: %d logins, %s, refusal window %s; chat-server 0's view: %s; %s",
		loopers, sys.cluster.Name(killed), ll.logins, refusals, window.Round(time.Millisecond), viewLookups(t, sys.chats[0]), f)
	if window > 2*time.Second {
		t.Fatalf("logins refused for %s; want at most 2 s", window)
	}
}

// loginEvery paces each user's logins in TestScaleOutLogins.
const loginEvery = 250 * time.Millisecond

// loop logs user i in and out, at most every loginEvery, until stop is
// closed.
func (l *loginLoops) loop(sys *system, i int, u *user, stop <-chan struct{}) {
	tick := time.NewTicker(loginEvery)
	defer tick.Stop()
	for {
		ctx, cancel := contextFor(10 * time.Second)
		at := time.Now()
		nc, err := chat.Connect(ctx, sys.natsURL, u.id, nats.NoReconnect())
		cancel()
		if err == nil {
			nc.Close()
		}
		l.record(i, at, err)
		select {
		case <-stop:
			return
		case <-tick.C:
		}
	}
}

// viewLookups returns srv's kez_chat_registry_view_lookups_total lines.
func viewLookups(t testing.TB, srv *chatserver.Server) string {
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	var out []string
	for l := range strings.Lines(rec.Body.String()) {
		if strings.HasPrefix(l, "kez_chat_registry_view_lookups_total{") {
			out = append(out, strings.TrimPrefix(strings.TrimSpace(l), "kez_chat_registry_view_lookups_total"))
		}
	}
	if len(out) == 0 {
		t.Errorf("chat-server 0's /metrics has no view lookups:\n%s", rec.Body.String())
	}
	return strings.Join(out, " ")
}

// loginLoops counts the logins of TestScaleOutLogins' loops.
type loginLoops struct {
	mu                        sync.Mutex
	cond                      *sync.Cond
	rounds                    []int // successful logins per user
	logins, refused           int
	firstRefused, lastRefused time.Time
	kinds                     map[string]int // refusals by error
	firstOther                error          // the first refusal of kind "other"
}

func (l *loginLoops) init() {
	if l.cond == nil {
		l.cond = sync.NewCond(&l.mu)
		l.kinds = map[string]int{}
	}
}

// record counts user i's login that started at at.
func (l *loginLoops) record(i int, at time.Time, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.init()
	l.logins++
	if err == nil {
		l.rounds[i]++
		l.cond.Broadcast()
		return
	}
	l.refused++
	if l.firstRefused.IsZero() {
		l.firstRefused = at
	}
	l.lastRefused = at
	kind := "other"
	switch {
	case errors.Is(err, chat.ErrNotRegistered):
		kind = "refused by the callout"
	case errors.Is(err, chat.ErrUnreachable):
		kind = "unreachable"
	}
	if kind == "other" && l.firstOther == nil {
		l.firstOther = err
	}
	l.kinds[kind]++
}

// minRounds is the fewest successful logins of a user.
func (l *loginLoops) minRounds() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.minLocked()
}

func (l *loginLoops) minLocked() int {
	m := -1
	for _, r := range l.rounds {
		if m < 0 || r < m {
			m = r
		}
	}
	return m
}

// waitAll waits until every user logged in n times. A user that cannot
// log in for long fails the test through the loops' own timeouts being
// counted, so waitAll gives up after two minutes.
func (l *loginLoops) waitAll(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.init()
	deadline := time.AfterFunc(2*time.Minute, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.cond.Broadcast()
	})
	defer deadline.Stop()
	start := time.Now()
	for l.minLocked() < n && time.Since(start) < 2*time.Minute {
		l.cond.Wait()
	}
}
