package systemtest

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// loadScale is the size of a load run.
type loadScale struct {
	clients, messages, contacts int
	cutEvery                    time.Duration // one random client's connections are cut this often
}

// TestLoadExactlyOnce: many clients send to each other through the
// callout and JetStream while a seeded random source cuts their
// connections; every message the stream acknowledged is delivered
// exactly once (counted by sender and ID) and none is lost. The default
// run is 20 clients × 20 messages; KEZ_LONG=1 runs 200 × 100.
func TestLoadExactlyOnce(t *testing.T) {
	sc := loadScale{clients: 20, messages: 20, contacts: 3, cutEvery: 25 * time.Millisecond}
	if long() {
		sc = loadScale{clients: 200, messages: 100, contacts: 3, cutEvery: 20 * time.Millisecond}
	}
	// A delivery cut off before its acknowledgement comes back after the
	// consumer's AckWait (30 s by default); 2 s keeps the run short.
	sys := startSystem(t, sysOptions{ackWait: 2 * time.Second})
	runLoad(t, sys, sc, 1, nil)
}

// runLoad runs a load of sc on sys with the given seed. During the run,
// chaos (if not nil) is called once, when a third of the messages are
// acknowledged. It fails the test on any loss or duplicate and returns the
// figures.
func runLoad(t *testing.T, sys *system, sc loadScale, seed uint64, chaos func()) figures {
	t.Helper()
	start := time.Now()
	users := sys.registerMany(t, "load", sc.clients)
	clients := make([]*client, sc.clients)
	errs := make([]error, sc.clients)
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i, u := range users {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			clients[i], errs[i] = sys.tryOpen(t, u, "")
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("opening client %d: %v", i, err)
		}
	}
	for i, c := range clients {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			for k := 1; k <= sc.contacts; k++ {
				peer := clients[(i+k)%len(clients)]
				if _, err := c.AddContact(ctx, peer.u.handle.String()); err != nil {
					errs[i] = fmt.Errorf("%s adds %s: %w", c.u.name, peer.u.name, err)
					return
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	tl := newTally()
	for _, c := range clients {
		c.run(t, tl.handler(c.u.key))
	}
	setup := time.Since(start)
	authBefore := authorizations(t, sys)

	// Chaos: cut a random client's connections at a steady pace.
	chaosRNG := rand.New(rand.NewPCG(seed, 0xC4A05))
	stop := make(chan struct{})
	var cuts, cutConns atomic.Int64
	var chaosDone sync.WaitGroup
	chaosDone.Go(func() {
		tick := time.NewTicker(sc.cutEvery)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				c := clients[chaosRNG.IntN(len(clients))]
				cuts.Add(1)
				cutConns.Add(int64(c.net.Cut()))
			}
		}
	})

	total := sc.clients * sc.messages
	var acked atomic.Int64
	third := make(chan struct{})
	var thirdOnce sync.Once
	sendStart := time.Now()
	for i, c := range clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(i)))
			for m := range sc.messages {
				peer := clients[(i+1+rng.IntN(sc.contacts))%len(clients)]
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				s, err := c.Send(ctx, peer.u.handle.String(), fmt.Sprintf("%s #%d", c.u.name, m))
				cancel()
				tl.sent(c.u.key, peer.u.key, s, err)
				if acked.Add(1) == int64(total/3) {
					thirdOnce.Do(func() { close(third) })
				}
			}
		})
	}
	if chaos != nil {
		<-third
		chaos()
	}
	wg.Wait()
	sendTime := time.Since(sendStart)
	close(stop)
	chaosDone.Wait()
	f := tl.waitDelivered(t, 120*time.Second)
	deliverTime := time.Since(sendStart)

	// The histories hold each message once.
	stored := 0
	var dupDeliveries uint64
	for _, c := range clients {
		ctx := testCtx(t, 30*time.Second)
		es, err := c.Inbox(ctx, true) // from contacts
		if err != nil {
			t.Fatal(err)
		}
		rs, err := c.Requests(ctx) // from others
		if err != nil {
			t.Fatal(err)
		}
		stored += len(es) + len(rs)
		dupDeliveries += c.Stats().Duplicates
	}
	logins := authorizations(t, sys) - authBefore
	t.Logf("load %d clients × %d messages (seed %d): %s; stored in histories %d; redeliveries dropped by clients %d; "+
		"%d cuts (%d connections) → %d callout logins; setup %s, sends %s (%.0f msgs/s), all delivered after %s",
		sc.clients, sc.messages, seed, f, stored, dupDeliveries, cuts.Load(), cutConns.Load(), logins,
		setup.Round(time.Millisecond), sendTime.Round(time.Millisecond), float64(f.Acked)/sendTime.Seconds(), deliverTime.Round(time.Millisecond))
	if f.Lost != 0 || f.Duplicated != 0 {
		t.Fatalf("lost %d, duplicated %d", f.Lost, f.Duplicated)
	}
	if stored != f.Delivered {
		t.Fatalf("histories hold %d messages, handlers saw %d", stored, f.Delivered)
	}
	if f.Acked+f.Unacked != total {
		t.Fatalf("%d acknowledged + %d failed sends, want %d", f.Acked, f.Unacked, total)
	}
	return f
}

var allowedRE = regexp.MustCompile(`(?m)^kez_chat_authorizations_total\{result="allowed"\} (\d+)`)

// authorizations sums the logins the running chat-server replicas granted.
func authorizations(t testing.TB, sys *system) int {
	t.Helper()
	sys.mu.Lock()
	defer sys.mu.Unlock()
	n := 0
	for _, c := range sys.chats {
		if c == nil {
			continue
		}
		rec := &recorder{header: http.Header{}}
		req, _ := http.NewRequest(http.MethodGet, "/metrics", nil)
		c.Handler().ServeHTTP(rec, req)
		if m := allowedRE.FindSubmatch(rec.body); m != nil {
			v, _ := strconv.Atoi(string(m[1]))
			n += v
		}
	}
	return n
}

// recorder is a minimal http.ResponseWriter.
type recorder struct {
	header http.Header
	body   []byte
	code   int
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) WriteHeader(code int)        { r.code = code }
func (r *recorder) Write(b []byte) (int, error) { r.body = append(r.body, b...); return len(b), nil }

var _ io.Writer = (*recorder)(nil)
