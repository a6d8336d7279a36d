package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/limittest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/ratelimit"
	"github.com/kez-lat/kez-chat/session"
	"github.com/kez-lat/kez-chat/sigchain"
)

// runPrekeys runs the prekey directory's part of the contract, for a
// store that is a [sigchain.PrekeyStore].
func runPrekeys(t *testing.T, open Open) {
	t.Run("PrekeyStore", func(t *testing.T) { testPrekeyStore(t, open) })
	t.Run("PrekeyRace", func(t *testing.T) { testPrekeyRace(t, open) })
	t.Run("PrekeyOrphan", func(t *testing.T) { testPrekeyOrphan(t, open) })
	t.Run("PrekeyAPI", func(t *testing.T) { testPrekeyAPI(t, open) })
	t.Run("PrekeyAbuse", func(t *testing.T) { testPrekeyAbuse(t, open) })
	t.Run("PrekeyFloods", func(t *testing.T) { testPrekeyFloods(t, open) })
}

// prekeyStore returns s as a PrekeyStore or skips the test.
func prekeyStore(t *testing.T, s sigchain.Store) sigchain.PrekeyStore {
	t.Helper()
	ps, ok := s.(sigchain.PrekeyStore)
	if !ok {
		t.Skip("the store keeps no prekeys")
	}
	return ps
}

// Prekey makes a signed prekey record of id, made at created and valid
// for lifetime, with fresh random keys.
func Prekey(t testing.TB, id *kez.Identity, prekeyID uint32, created time.Time, lifetime time.Duration) *session.Prekey {
	t.Helper()
	k, err := session.NewPrekey(rand.Reader, id, prekeyID, created, lifetime)
	if err != nil {
		t.Fatal(err)
	}
	return &k.Public
}

// record returns p's bytes.
func record(t testing.TB, p *session.Prekey) []byte {
	t.Helper()
	b, err := p.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// resign signs p again with signer, whatever p.Owner says.
func resign(t testing.TB, signer *kez.Identity, p *session.Prekey) *session.Prekey {
	t.Helper()
	b := record(t, p)
	sig, err := signer.Sign("kez/v2 prekey", b[:len(b)-64])
	if err != nil {
		t.Fatal(err)
	}
	q := *p
	copy(q.Sig[:], sig)
	return &q
}

func wantStored(t *testing.T, what string, ps sigchain.PrekeyStore, key kez.PublicKey, want *session.Prekey) {
	t.Helper()
	got, err := ps.Prekey(context.Background(), key)
	if want == nil {
		if !errors.Is(err, sigchain.ErrNoPrekey) {
			t.Fatalf("%s: Prekey = %d bytes, %v; want ErrNoPrekey", what, len(got), err)
		}
		return
	}
	if err != nil || !bytes.Equal(got, record(t, want)) {
		t.Fatalf("%s: Prekey = %d bytes, %v; want record %d", what, len(got), err, want.ID)
	}
}

// testPrekeyStore: no record for a key without a chain; a record only
// for a key with a chain; only newer records replace the stored one;
// another handle sees the same.
func testPrekeyStore(t *testing.T, open Open) {
	ctx := context.Background()
	s, another := open(t)
	ps := prekeyStore(t, s)
	alice, bob := Identity(t, 1), Identity(t, 2)
	now := time.Now()
	p1 := Prekey(t, alice, 1, now.Add(-time.Hour), 14*24*time.Hour)
	wantStored(t, "no chain", ps, alice.PublicKey(), nil)
	if err := ps.PutPrekey(ctx, p1); !errors.Is(err, sigchain.ErrNotFound) {
		t.Fatalf("a prekey for a key without a chain: %v, want ErrNotFound", err)
	}
	wantStored(t, "refused for want of a chain", ps, alice.PublicKey(), nil)

	appendAll(t, s, Chain(t, alice, 1))
	if err := ps.PutPrekey(ctx, p1); err != nil {
		t.Fatal(err)
	}
	wantStored(t, "first record", ps, alice.PublicKey(), p1)
	wantStored(t, "another key", ps, bob.PublicKey(), nil)
	for _, c := range []struct {
		name string
		p    *session.Prekey
	}{
		{"the same record", p1},
		{"another record made at the same time", Prekey(t, alice, 2, p1.Created, 14*24*time.Hour)},
		{"an older record", Prekey(t, alice, 3, p1.Created.Add(-time.Millisecond), 14*24*time.Hour)},
	} {
		if err := ps.PutPrekey(ctx, c.p); !errors.Is(err, sigchain.ErrStalePrekey) {
			t.Fatalf("%s: %v, want ErrStalePrekey", c.name, err)
		}
		wantStored(t, c.name, ps, alice.PublicKey(), p1)
	}
	p2 := Prekey(t, alice, 4, p1.Created.Add(time.Millisecond), 14*24*time.Hour)
	if err := ps.PutPrekey(ctx, p2); err != nil {
		t.Fatal(err)
	}
	wantStored(t, "a newer record", ps, alice.PublicKey(), p2)
	wantStored(t, "through another handle", prekeyStore(t, another()), alice.PublicKey(), p2)
}

// testPrekeyRace stores records made at different times at once through
// two handles: whatever the order, the newest is stored and every older
// one that lost is refused as stale.
func testPrekeyRace(t *testing.T, open Open) {
	ctx := context.Background()
	s, another := open(t)
	ps, ps2 := prekeyStore(t, s), prekeyStore(t, another())
	alice := Identity(t, 1)
	appendAll(t, s, Chain(t, alice, 1))
	base := time.Now().Add(-time.Hour)
	const n = 8
	recs := make([]*session.Prekey, n)
	for i := range recs {
		recs[i] = Prekey(t, alice, uint32(i+1), base.Add(time.Duration(i)*time.Millisecond), 24*time.Hour)
	}
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, p := range recs {
		st := ps
		if i%2 == 1 {
			st = ps2
		}
		wg.Go(func() { <-start; errs[i] = st.PutPrekey(ctx, p) })
	}
	close(start)
	wg.Wait()
	if errs[n-1] != nil {
		t.Fatalf("the newest record: %v", errs[n-1])
	}
	for i, err := range errs {
		if err != nil && !errors.Is(err, sigchain.ErrStalePrekey) {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	wantStored(t, "after the race", ps, alice.PublicKey(), recs[n-1])
}

// testPrekeyOrphan: collecting an orphan chain removes its prekey, and
// a new chain of the key starts without one.
func testPrekeyOrphan(t *testing.T, open Open) {
	ctx := context.Background()
	s, _ := open(t)
	ps := prekeyStore(t, s)
	c := collector(t, s)
	orphan, named := Identity(t, 1), Identity(t, 2)
	appendAll(t, s, Chain(t, orphan, 1))
	appendAll(t, s, namedChain(t, named))
	po, pn := Prekey(t, orphan, 1, time.Now(), time.Hour), Prekey(t, named, 1, time.Now(), time.Hour)
	for _, p := range []*session.Prekey{po, pn} {
		if err := ps.PutPrekey(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := c.CollectOrphans(ctx, time.Now().Add(time.Hour)); n != 1 || err != nil {
		t.Fatalf("collected %d, %v", n, err)
	}
	wantStored(t, "the collected chain's", ps, orphan.PublicKey(), nil)
	wantStored(t, "the kept chain's", ps, named.PublicKey(), pn)
	if err := ps.PutPrekey(ctx, Prekey(t, orphan, 2, time.Now(), time.Hour)); !errors.Is(err, sigchain.ErrNotFound) {
		t.Fatalf("a prekey for the collected key: %v", err)
	}
	appendAll(t, s, Chain(t, orphan, 1))
	p := Prekey(t, orphan, 3, time.Now(), time.Hour)
	if err := ps.PutPrekey(ctx, p); err != nil {
		t.Fatalf("a prekey for the new chain: %v", err)
	}
	wantStored(t, "the new chain's", ps, orphan.PublicKey(), p)
}

// namedChain is a one-link chain of id that names a handle.
func namedChain(t *testing.T, id *kez.Identity) []*sigchain.Link {
	t.Helper()
	l, err := sigchain.NewLink(id, nil, sigchain.TypeEldest, eldest(id, "named@kez.lat"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return []*sigchain.Link{l}
}

// prekeyServer is the sig-server's handler over a store, on a real HTTP
// server, with a fake clock for its limiters and a fixed one for
// verification; loopback is its trusted proxy, so a test speaks as any
// client address through X-Forwarded-For.
type prekeyServer struct {
	url     string
	store   sigchain.Store
	handler *sigchain.Handler
	clock   *limittest.Clock // the limiters'
	verify  *limittest.Clock // the verification's
	now     time.Time        // the verification clock's start
}

func startPrekeys(t *testing.T, s sigchain.Store, l sigchain.Limits) *prekeyServer {
	t.Helper()
	ps := &prekeyServer{store: s, clock: &limittest.Clock{}, verify: &limittest.Clock{}}
	ps.now = ps.verify.Now()
	l.Now = ps.clock.Now
	l.ClientIP.TrustedProxies = limittest.Loopback()
	ps.handler = sigchain.NewHandler(s, sigchain.WithLimits(l), sigchain.WithLogger(slog.New(slog.DiscardHandler)),
		sigchain.WithVerifyOptions(sigchain.WithClock(ps.verify.Now)))
	srv := httptest.NewServer(ps.handler)
	t.Cleanup(srv.Close)
	ps.url = srv.URL
	return ps
}

// client returns a client of s speaking as ip, verifying with s's clock.
func (s *prekeyServer) client(ip string) *sigchain.Client {
	return &sigchain.Client{BaseURL: s.url, HTTPClient: limittest.From(ip),
		VerifyOptions: []sigchain.VerifyOption{sigchain.WithClock(s.verify.Now)}}
}

// put sends body to PUT /v1/prekeys/{key} as ip and returns the status
// and the answer's reason.
func (s *prekeyServer) put(t *testing.T, ip, key, contentType string, body io.Reader) (int, string) {
	t.Helper()
	return s.send(t, http.MethodPut, sigchain.PrekeysPath+key, ip, contentType, body)
}

// send sends body to path with method as ip and returns the status and
// the answer's reason.
func (s *prekeyServer) send(t *testing.T, method, path, ip, contentType string, body io.Reader) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, s.url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := limittest.From(ip).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	reason := ""
	if i := bytes.Index(answer, []byte(`"reason":"`)); i >= 0 {
		reason = string(answer[i+10:])
		reason = reason[:strings.IndexByte(reason, '"')]
	}
	return resp.StatusCode, reason
}

// testPrekeyAPI is the directory's happy path through the client.
func testPrekeyAPI(t *testing.T, open Open) {
	ctx := context.Background()
	st, _ := open(t)
	prekeyStore(t, st)
	s := startPrekeys(t, st, sigchain.NoLimits())
	alice := Identity(t, 1)
	c := s.client("192.0.2.1")
	if _, err := c.FetchPrekey(ctx, alice.PublicKey()); !errors.Is(err, sigchain.ErrNoPrekey) {
		t.Fatalf("GET of an unknown key: %v, want ErrNoPrekey", err)
	}
	appendAll(t, st, Chain(t, alice, 1))
	if _, err := c.FetchPrekey(ctx, alice.PublicKey()); !errors.Is(err, sigchain.ErrNoPrekey) {
		t.Fatalf("GET of a key with a chain and no prekey: %v, want ErrNoPrekey", err)
	}
	p := Prekey(t, alice, 7, s.now, 14*24*time.Hour)
	if err := c.PublishPrekey(ctx, p); err != nil {
		t.Fatal(err)
	}
	got, err := c.FetchPrekey(ctx, alice.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(record(t, got), record(t, p)) {
		t.Fatal("fetched another record than the published one")
	}
	if err := c.PublishPrekey(ctx, p); err != nil {
		t.Fatalf("publishing the same record again: %v", err)
	}
	if st := s.handler.Stats().Prekeys; st.Stored != 1 {
		t.Fatalf("stats %+v, want one stored", st)
	}
	// Exactly the longest lifetime the server takes.
	long := Prekey(t, alice, 8, s.now.Add(time.Millisecond), sigchain.MaxPrekeyLifetime)
	if err := c.PublishPrekey(ctx, long); err != nil {
		t.Fatalf("a record valid for MaxPrekeyLifetime: %v", err)
	}
	// A stored record that expired since is served, and the client
	// refuses it.
	s.verify.Add(long.Expires.Sub(s.verify.Now()))
	if _, err := c.FetchPrekey(ctx, alice.PublicKey()); !errors.Is(err, session.ErrPrekeyExpired) {
		t.Fatalf("fetching an expired record: %v, want ErrPrekeyExpired", err)
	}
}

// testPrekeyAbuse sends the directory what an attacker would: records
// of others, forged, expired, future, too long-lived, rolled back,
// oversized, junk, and keys without chains. Each is refused with its
// status and the stored record stays.
func testPrekeyAbuse(t *testing.T, open Open) {
	ctx := context.Background()
	st, _ := open(t)
	s := startPrekeys(t, st, sigchain.NoLimits())
	alice, mallory, nochain := Identity(t, 1), Identity(t, 2), Identity(t, 3)
	appendAll(t, st, Chain(t, alice, 1))
	appendAll(t, st, Chain(t, mallory, 1))
	now := s.now
	good := Prekey(t, alice, 1, now.Add(-time.Minute), 14*24*time.Hour)
	c := s.client("192.0.2.1")
	if err := c.PublishPrekey(ctx, good); err != nil {
		t.Fatal(err)
	}
	ak := alice.PublicKey().String()
	const bin = "application/octet-stream"

	flipped := record(t, good)
	flipped[len(flipped)-1] ^= 1
	otherOwner := *good
	otherOwner.Owner = mallory.PublicKey()
	day := 24 * time.Hour
	for _, c := range []struct {
		name   string
		key    string
		ct     string
		body   []byte
		status int
		reason string
	}{
		{"mallory's own record under alice's key", ak, bin, record(t, Prekey(t, mallory, 9, now, day)), 422, ""},
		{"alice's record claiming mallory, signed by alice", mallory.PublicKey().String(), bin, record(t, &otherOwner), 422, ""},
		{"alice's record signed by mallory", ak, bin, record(t, resign(t, mallory, Prekey(t, alice, 9, now, day))), 422, ""},
		{"a flipped signature bit", ak, bin, flipped, 422, ""},
		{"expired", ak, bin, record(t, Prekey(t, alice, 9, now.Add(-2*day), day)), 422, ""},
		{"expiring as it arrives", ak, bin, record(t, Prekey(t, alice, 9, now.Add(-day), day)), 422, ""},
		{"made an hour ahead", ak, bin, record(t, Prekey(t, alice, 9, now.Add(time.Hour), day)), 422, ""},
		{"made 5 min and 1 ms ahead", ak, bin, record(t, Prekey(t, alice, 9, now.Add(5*time.Minute+time.Millisecond), day)), 422, ""},
		{"valid 60 days and 1 ms", ak, bin, record(t, Prekey(t, alice, 9, now, sigchain.MaxPrekeyLifetime+time.Millisecond)), 422, ""},
		{"valid ten years", ak, bin, record(t, Prekey(t, alice, 9, now, 3650*day)), 422, ""},
		{"rollback: older than the stored", ak, bin, record(t, Prekey(t, alice, 9, good.Created.Add(-time.Second), day)), 409, sigchain.ReasonPrekeyNotNewer},
		{"rollback: as old as the stored", ak, bin, record(t, Prekey(t, alice, 9, good.Created, day)), 409, sigchain.ReasonPrekeyNotNewer},
		{"a key with no chain", nochain.PublicKey().String(), bin, record(t, Prekey(t, nochain, 9, now, day)), 404, sigchain.ReasonNoChain},
		{"empty body", ak, bin, nil, 400, ""},
		{"junk of a record's size", ak, bin, bytes.Repeat([]byte{0xa5}, session.PrekeyRecordSize), 400, ""},
		{"truncated record", ak, bin, record(t, good)[:session.PrekeyRecordSize-1], 400, ""},
		{"a byte after the record", ak, bin, append(record(t, good), 0), 400, ""},
		{"JSON", ak, "application/json", []byte(`{"prekey":"x"}`), 415, ""},
		{"no content type", ak, "", record(t, good), 415, ""},
		{"a record as text", ak, "text/plain", record(t, good), 415, ""},
		{"2 KiB and a byte", ak, bin, make([]byte, sigchain.MaxPrekeySize+1), 413, ""},
		{"a megabyte", ak, bin, make([]byte, 1<<20), 413, ""},
		{"not a key", "alice", bin, record(t, good), 400, ""},
		{"a key of the wrong kind", "N" + ak[1:], bin, record(t, good), 400, ""},
	} {
		status, reason := s.put(t, "192.0.2.1", c.key, c.ct, bytes.NewReader(c.body))
		if status != c.status || reason != c.reason {
			t.Errorf("%s: %d %q, want %d %q", c.name, status, reason, c.status, c.reason)
		}
	}
	wantStored(t, "after the abuse", prekeyStore(t, st), alice.PublicKey(), good)
	wantStored(t, "for mallory", prekeyStore(t, st), mallory.PublicKey(), nil)
	wantStored(t, "for the key without a chain", prekeyStore(t, st), nochain.PublicKey(), nil)
	stats := s.handler.Stats().Prekeys
	if stats.Stored != 1 || stats.Invalid != 10 || stats.NotNewer != 2 || stats.NoChain != 1 || stats.Malformed != 11 {
		t.Errorf("stats %+v", stats)
	}

	// The client's errors.
	if err := c.PublishPrekey(ctx, Prekey(t, alice, 9, good.Created.Add(-time.Second), day)); !errors.Is(err, sigchain.ErrStalePrekey) {
		t.Errorf("client publishing an older record: %v, want ErrStalePrekey", err)
	}
	if err := c.PublishPrekey(ctx, Prekey(t, nochain, 9, now, day)); !errors.Is(err, sigchain.ErrNotFound) {
		t.Errorf("client publishing for a key without a chain: %v, want ErrNotFound", err)
	}
	if err := c.PublishPrekey(ctx, Prekey(t, alice, 9, now.Add(time.Hour), day)); !errors.Is(err, sigchain.ErrInvalid) {
		t.Errorf("client publishing a future record: %v, want ErrInvalid", err)
	}
	if _, err := c.FetchPrekey(ctx, nochain.PublicKey()); !errors.Is(err, sigchain.ErrNoPrekey) {
		t.Errorf("client fetching for a key without a chain: %v, want ErrNoPrekey", err)
	}
	for _, path := range []string{"alice", "U" + strings.Repeat("A", 55)} {
		resp, err := http.Get(s.url + sigchain.PrekeysPath + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Errorf("GET %s: %d, want 400", path, resp.StatusCode)
		}
	}
}

// testPrekeyFloods floods the directory from one address and for one
// key: past each limit the answer is 429 with the exact Retry-After, the
// client's error carries it, and others are not held up. Only valid new
// records spend a key's bucket.
func testPrekeyFloods(t *testing.T, open Open) {
	ctx := context.Background()
	st, _ := open(t)
	l := sigchain.NoLimits()
	l.PrekeysPerIP = ratelimit.Limit{N: 4, Per: time.Hour}
	l.PrekeysPerKey = ratelimit.Limit{N: 2, Per: time.Hour}
	l.PrekeyReadsPerIP = ratelimit.Limit{N: 3, Per: time.Minute}
	s := startPrekeys(t, st, l)
	alice, bob := Identity(t, 1), Identity(t, 2)
	appendAll(t, st, Chain(t, alice, 1))
	appendAll(t, st, Chain(t, bob, 1))
	base := s.now.Add(-time.Hour)
	recs := map[string]*session.Prekey{}
	rec := func(id *kez.Identity, i int) *session.Prekey { // the same record for the same (id, i)
		k := fmt.Sprint(id.PublicKey(), i)
		if recs[k] == nil {
			recs[k] = Prekey(t, id, uint32(i), base.Add(time.Duration(i)*time.Second), 24*time.Hour)
		}
		return recs[k]
	}

	// Per key: two new records, then 429; a retry of the stored one, an
	// invalid and an older record still get their own answers and spend
	// nothing of the key's bucket.
	key := s.client("198.51.100.1")
	for i := 1; i <= 2; i++ {
		if err := key.PublishPrekey(ctx, rec(alice, i)); err != nil {
			t.Fatal(err)
		}
	}
	wantLimited(t, "a third new record for the key", key.PublishPrekey(ctx, rec(alice, 3)), 30*time.Minute)
	other := s.client("198.51.100.2")
	if err := other.PublishPrekey(ctx, rec(alice, 2)); err != nil {
		t.Fatalf("the stored record again: %v", err)
	}
	if err := other.PublishPrekey(ctx, rec(alice, 1)); !errors.Is(err, sigchain.ErrStalePrekey) {
		t.Fatalf("an older record: %v", err)
	}
	if err := other.PublishPrekey(ctx, resign(t, bob, rec(alice, 4))); !errors.Is(err, sigchain.ErrInvalid) {
		t.Fatalf("a forged record: %v", err)
	}
	if err := other.PublishPrekey(ctx, rec(bob, 1)); err != nil {
		t.Fatalf("another key: %v", err)
	}
	s.clock.Add(30 * time.Minute)
	if err := key.PublishPrekey(ctx, rec(alice, 3)); err != nil {
		t.Fatalf("after Retry-After: %v", err)
	}

	// Per address: whatever the records, four, then 429; another address
	// goes on.
	ip := s.client("203.0.113.66")
	for i := range 4 {
		status, _ := s.put(t, "203.0.113.66", alice.PublicKey().String(), "application/octet-stream", bytes.NewReader([]byte{byte(i)}))
		if status != 400 {
			t.Fatalf("junk %d: %d", i, status)
		}
	}
	wantLimited(t, "the address's fifth PUT", ip.PublishPrekey(ctx, rec(bob, 2)), 15*time.Minute)
	if status, _ := s.put(t, "203.0.113.66", "junk", "", nil); status != 429 {
		t.Fatalf("junk past the limit: %d, want 429 before anything is read", status)
	}
	if err := s.client("203.0.113.67").PublishPrekey(ctx, rec(bob, 2)); err != nil {
		t.Fatalf("another address: %v", err)
	}

	// Reads per address.
	for range 3 {
		if _, err := ip.FetchPrekey(ctx, alice.PublicKey()); err != nil {
			t.Fatal(err)
		}
	}
	wantLimited(t, "the fourth read", func() error { _, err := ip.FetchPrekey(ctx, alice.PublicKey()); return err }(), 20*time.Second)
	if _, err := key.FetchPrekey(ctx, alice.PublicKey()); err != nil {
		t.Fatalf("another address reading: %v", err)
	}

	limited := map[string]uint64{}
	for _, ls := range s.handler.Stats().Limiters {
		limited[ls.Endpoint+"/"+ls.Reason] += ls.Limited
	}
	if limited["prekey_put/key"] != 1 || limited["prekey_put/ip"] != 2 || limited["prekey_get/ip"] != 1 {
		t.Fatalf("limited %v", limited)
	}
}

// wantLimited checks that err is a 429 with the given Retry-After.
func wantLimited(t *testing.T, what string, err error, retry time.Duration) {
	t.Helper()
	var rl *sigchain.RateLimitedError
	if !errors.Is(err, sigchain.ErrRateLimited) || !errors.As(err, &rl) || rl.RetryAfter != retry {
		t.Fatalf("%s: %v; want a 429 with Retry-After %v", what, err, retry)
	}
}
