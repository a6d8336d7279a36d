package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/ratelimit"
	"github.com/kez-lat/kez-chat/session"
	"github.com/kez-lat/kez-chat/sigchain"
)

const octets = "application/octet-stream"

// startDevices serves the handler over s (skipping the test if s keeps
// no devices or link requests).
func startDevices(t *testing.T, s sigchain.Store, l sigchain.Limits) *prekeyServer {
	t.Helper()
	deviceStore(t, s)
	linkStore(t, s)
	return startPrekeys(t, s, l)
}

// postLink sends body to POST /v1/links as ip.
func (s *prekeyServer) postLink(t *testing.T, ip, contentType string, body []byte) (int, string) {
	t.Helper()
	return s.send(t, http.MethodPost, sigchain.LinksPath, ip, contentType, bytes.NewReader(body))
}

// testLinkAPI is the happy path of linking a device, through the client:
// the new device posts its request, the primary fetches it by code and
// adds the device, the device learns its person and publishes a prekey;
// a revocation shows in the index and takes the prekey away.
func testLinkAPI(t *testing.T, open Open) {
	ctx := context.Background()
	st, _ := open(t)
	s := startDevices(t, st, sigchain.NoLimits())
	now := s.now
	alice := NewPerson(t, Identity(t, 1), "alice@kez.lat", now)
	appendAll(t, st, alice.Links)
	dev := Identity(t, 11)
	c := s.client("192.0.2.1")

	req := LinkRequest(t, dev, "phone", now)
	for range 2 { // the second is a retry
		if err := c.PostLinkRequest(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	if st := s.handler.Stats().LinkRequests; st.Stored != 1 {
		t.Fatalf("stats %+v, want one stored", st)
	}
	got, person, err := c.FetchLinkRequest(ctx, req.Code())
	if err != nil || !bytes.Equal(got.Bytes(), req.Bytes()) || !person.IsZero() {
		t.Fatalf("FetchLinkRequest = %v, %s, %v", got, person, err)
	}
	// The code as a person types it: lower case, spaces for dashes.
	typed := strings.ToLower(strings.ReplaceAll(req.Code().String(), "-", " "))
	if status, _ := s.send(t, http.MethodGet, sigchain.LinksPath+"/"+strings.ReplaceAll(typed, " ", "%20"), "192.0.2.1", "", nil); status != 200 {
		t.Fatalf("GET of the code as typed (%q): %d", typed, status)
	}
	if _, _, err := c.DevicePerson(ctx, dev.PublicKey()); !errors.Is(err, sigchain.ErrNoDevice) {
		t.Fatalf("DevicePerson before the add: %v, want ErrNoDevice", err)
	}

	if err := c.Append(ctx, alice.Next(t, sigchain.TypeAddDevice, sigchain.AddDeviceBody(got), now)); err != nil {
		t.Fatalf("appending the add_device link: %v", err)
	}
	if _, person, err = c.FetchLinkRequest(ctx, req.Code()); err != nil || person != alice.ID.PublicKey() {
		t.Fatalf("FetchLinkRequest after the add: person %s, %v", person, err)
	}
	if p, revoked, err := c.DevicePerson(ctx, dev.PublicKey()); err != nil || p != alice.ID.PublicKey() || revoked {
		t.Fatalf("DevicePerson = %s, %v, %v", p, revoked, err)
	}
	pk := Prekey(t, dev, 1, now, 14*24*time.Hour)
	if err := c.PublishPrekey(ctx, pk); err != nil {
		t.Fatalf("the device publishing its prekey: %v", err)
	}
	if fetched, err := c.FetchPrekey(ctx, dev.PublicKey()); err != nil || !bytes.Equal(record(t, fetched), record(t, pk)) {
		t.Fatalf("fetching the device's prekey: %v", err)
	}
	if err := c.PostLinkRequest(ctx, LinkRequest(t, dev, "phone", now)); !errors.Is(err, sigchain.ErrDeviceKnown) {
		t.Fatalf("a new request of the added device: %v, want ErrDeviceKnown", err)
	}

	if err := c.Append(ctx, alice.RevokeDevice(t, dev.PublicKey(), now)); err != nil {
		t.Fatal(err)
	}
	if p, revoked, err := c.DevicePerson(ctx, dev.PublicKey()); err != nil || p != alice.ID.PublicKey() || !revoked {
		t.Fatalf("DevicePerson after the revocation = %s, %v, %v", p, revoked, err)
	}
	if _, err := c.FetchPrekey(ctx, dev.PublicKey()); !errors.Is(err, sigchain.ErrNoPrekey) {
		t.Fatalf("a revoked device's prekey: %v, want ErrNoPrekey", err)
	}
	err = c.PublishPrekey(ctx, Prekey(t, dev, 2, now.Add(time.Second), time.Hour))
	if !errors.Is(err, sigchain.ErrDeviceRevoked) || !errors.Is(err, sigchain.ErrInvalid) {
		t.Fatalf("a revoked device publishing: %v, want ErrDeviceRevoked", err)
	}
	if err := c.PostLinkRequest(ctx, LinkRequest(t, dev, "phone", now)); !errors.Is(err, sigchain.ErrDeviceKnown) {
		t.Fatalf("a request of the revoked device: %v, want ErrDeviceKnown", err)
	}
}

// testLinkAbuse sends the link routes what an attacker would: requests
// signed by another key, tampered, expired, future, oversized, junk, for
// devices already on a chain; codes guessed, mistyped, and read after
// expiry. Each gets its status, and nothing is stored.
func testLinkAbuse(t *testing.T, open Open) {
	ctx := context.Background()
	st, _ := open(t)
	s := startDevices(t, st, sigchain.NoLimits())
	now := s.now
	alice, mallory := NewPerson(t, Identity(t, 1), "alice@kez.lat", now), NewPerson(t, Identity(t, 2), "mallory@kez.lat", now)
	onChain, revoked := Identity(t, 11), Identity(t, 12)
	alice.AddDevice(t, onChain, now)
	alice.AddDevice(t, revoked, now)
	alice.RevokeDevice(t, revoked.PublicKey(), now)
	appendAll(t, st, alice.Links)
	appendAll(t, st, mallory.Links)
	dev, other := Identity(t, 13), Identity(t, 14)

	good := LinkRequest(t, dev, "phone", now).Bytes()
	// dev's signed request with other's key in it: the signature is no
	// longer other's.
	swapped := bytes.Replace(good, []byte(dev.PublicKey().String()), []byte(other.PublicKey().String()), 1)
	renamed := bytes.Replace(good, []byte(`"phone"`), []byte(`"phonf"`), 1)
	skew, ttl := sigchain.LinkRequestSkew, sigchain.LinkRequestTTL
	for _, c := range []struct {
		name   string
		ct     string
		body   []byte
		status int
		reason string
	}{
		{"another device's key in a signed request", octets, swapped, 422, ""},
		{"a tampered name", octets, renamed, 422, ""},
		{"a flipped signature character", octets, flipSig(good), 422, ""},
		{"expired a second ago", octets, LinkRequest(t, dev, "phone", now.Add(-ttl-time.Second)).Bytes(), 422, sigchain.ReasonLinkExpired},
		{"made a day ago", octets, LinkRequest(t, dev, "phone", now.Add(-24*time.Hour)).Bytes(), 422, sigchain.ReasonLinkExpired},
		{"made 5 min and a second ahead", octets, LinkRequest(t, dev, "phone", now.Add(skew+time.Second)).Bytes(), 422, sigchain.ReasonLinkNotYetValid},
		{"made a year ahead", octets, LinkRequest(t, dev, "phone", now.Add(365*24*time.Hour)).Bytes(), 422, sigchain.ReasonLinkNotYetValid},
		{"a device on a chain", octets, LinkRequest(t, onChain, "phone", now).Bytes(), 409, sigchain.ReasonDeviceKnown},
		{"a revoked device", octets, LinkRequest(t, revoked, "phone", now).Bytes(), 409, sigchain.ReasonDeviceKnown},
		{"a key with its own chain", octets, LinkRequest(t, mallory.ID, "phone", now).Bytes(), 409, sigchain.ReasonDeviceKnown},
		{"a chain's link", octets, alice.Links[0].Bytes(), 422, ""},
		{"empty", octets, nil, 422, ""},
		{"junk", octets, []byte("hello"), 422, ""},
		{"a byte after the request", octets, append(bytes.Clone(good), '\n'), 422, ""},
		{"1 KiB and a byte of JSON", octets, append(append([]byte(`{"x":"`), bytes.Repeat([]byte("a"), 1020)...), '"', '}'), 422, ""},
		{"2 KiB and a byte", octets, make([]byte, sigchain.MaxLinkRequestBody+1), 413, ""},
		{"a megabyte", octets, make([]byte, 1<<20), 413, ""},
		{"as JSON", "application/json", good, 415, ""},
		{"no content type", "", good, 415, ""},
	} {
		status, reason := s.postLink(t, "192.0.2.1", c.ct, c.body)
		if status != c.status || reason != c.reason {
			t.Errorf("%s: %d %q, want %d %q", c.name, status, reason, c.status, c.reason)
		}
	}
	if stats := s.handler.Stats().LinkRequests; stats != (sigchain.LinkRequestStats{Malformed: 4, Invalid: 8, Expired: 4, DeviceKnown: 3}) {
		t.Errorf("stats %+v", stats)
	}
	// The edges are inside.
	c := s.client("192.0.2.1")
	for _, at := range []time.Time{now.Add(-ttl), now.Add(skew)} {
		if err := c.PostLinkRequest(ctx, LinkRequest(t, other, "edge", at)); err != nil {
			t.Errorf("a request made at %v (now %v): %v", at, now, err)
		}
	}
	// The client's errors.
	if err := c.PostLinkRequest(ctx, LinkRequest(t, dev, "phone", now.Add(-ttl-time.Second))); !errors.Is(err, sigchain.ErrLinkExpired) {
		t.Errorf("client posting an expired request: %v, want ErrLinkExpired", err)
	}
	if err := c.PostLinkRequest(ctx, LinkRequest(t, dev, "phone", now.Add(time.Hour))); !errors.Is(err, sigchain.ErrLinkNotYetValid) {
		t.Errorf("client posting a future request: %v, want ErrLinkNotYetValid", err)
	}
	if err := c.PostLinkRequest(ctx, LinkRequest(t, onChain, "phone", now)); !errors.Is(err, sigchain.ErrDeviceKnown) {
		t.Errorf("client posting for a device on a chain: %v, want ErrDeviceKnown", err)
	}
	if g, err := sigchain.ParseLinkRequest(good); err != nil {
		t.Fatal(err)
	} else if _, _, err := c.FetchLinkRequest(ctx, g.Code()); !errors.Is(err, sigchain.ErrNoLinkRequest) {
		t.Errorf("a refused request was stored: %v", err)
	}

	// Codes: guesses are unknown, typos and junk are 400.
	for range 64 {
		var guess sigchain.LinkCode
		rand.Read(guess[:])
		if _, _, err := c.FetchLinkRequest(ctx, guess); !errors.Is(err, sigchain.ErrNoLinkRequest) {
			t.Fatalf("a guessed code: %v, want ErrNoLinkRequest", err)
		}
	}
	stored := LinkRequest(t, dev, "phone", now)
	if err := c.PostLinkRequest(ctx, stored); err != nil {
		t.Fatal(err)
	}
	code := stored.Code().String()
	typo := string(otherSymbol(code[0])) + code[1:]
	for _, path := range []string{"hello", typo, code[:len(code)-2], code + "0", strings.Repeat("Z", 200), "%00"} {
		if status, _ := s.send(t, http.MethodGet, sigchain.LinksPath+"/"+path, "192.0.2.1", "", nil); status != 400 {
			t.Errorf("GET %s: %d, want 400", path, status)
		}
	}
	for _, path := range []string{"hello", "U" + strings.Repeat("A", 55)} {
		if status, _ := s.send(t, http.MethodGet, sigchain.DevicesPath+path, "192.0.2.1", "", nil); status != 400 {
			t.Errorf("GET device %s: %d, want 400", path, status)
		}
	}
	if status, reason := s.send(t, http.MethodGet, sigchain.DevicesPath+other.PublicKey().String(), "192.0.2.1", "", nil); status != 404 || reason != sigchain.ReasonNoDevice {
		t.Errorf("GET of an unknown device: %d %q", status, reason)
	}

	// Another device reads the request: fine until it expires, then
	// gone, swept or not.
	reader := s.client("198.51.100.9")
	if _, _, err := reader.FetchLinkRequest(ctx, stored.Code()); err != nil {
		t.Fatal(err)
	}
	s.verify.Add(stored.Expires().Sub(s.verify.Now()))
	if _, _, err := reader.FetchLinkRequest(ctx, stored.Code()); err != nil {
		t.Fatalf("at the second of its expiry: %v", err)
	}
	s.verify.Add(time.Second)
	if _, _, err := reader.FetchLinkRequest(ctx, stored.Code()); !errors.Is(err, sigchain.ErrNoLinkRequest) {
		t.Fatalf("after its expiry: %v, want ErrNoLinkRequest", err)
	}
	if _, err := linkStore(t, st).SweepLinkRequests(ctx, s.verify.Now()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := reader.FetchLinkRequest(ctx, stored.Code()); !errors.Is(err, sigchain.ErrNoLinkRequest) {
		t.Fatalf("after the sweep: %v, want ErrNoLinkRequest", err)
	}
}

// flipSig changes one character of the request's signature.
func flipSig(req []byte) []byte {
	b := bytes.Clone(req)
	i := bytes.LastIndex(b, []byte(`"sig":"`)) + 8
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return b
}

// otherSymbol returns a Crockford symbol other than c.
func otherSymbol(c byte) byte {
	if c == '7' {
		return '8'
	}
	return '7'
}

// testLinkFloods floods the link routes from one address and in all:
// past each limit the answer is 429 with the exact Retry-After, and other
// addresses are not held up until the cap on pending requests.
func testLinkFloods(t *testing.T, open Open) {
	ctx := context.Background()
	st, _ := open(t)
	l := sigchain.NoLimits()
	l.LinkRequestsPerIP = ratelimit.Limit{N: 3, Per: time.Hour}
	l.LinkReadsPerIP = ratelimit.Limit{N: 4, Per: time.Minute}
	l.DeviceReadsPerIP = ratelimit.Limit{N: 2, Per: time.Minute}
	l.MaxPendingLinkRequests = 5
	s := startDevices(t, st, l)
	now := s.now
	req := func(i int) *sigchain.LinkRequest { return LinkRequest(t, Identity(t, 100+i), "flood", now) }
	reqs := make([]*sigchain.LinkRequest, 8)
	for i := range reqs {
		reqs[i] = req(i)
	}

	flooder := s.client("203.0.113.66")
	for i := range 3 {
		if err := flooder.PostLinkRequest(ctx, reqs[i]); err != nil {
			t.Fatal(err)
		}
	}
	err := flooder.PostLinkRequest(ctx, reqs[3])
	wantLimited(t, "the address's fourth request", err, 20*time.Minute)
	if errors.Is(err, sigchain.ErrLinkRequestsFull) {
		t.Fatalf("the address's limit reads as the cap on pending requests: %v", err)
	}
	if status, _ := s.postLink(t, "203.0.113.66", "", []byte("junk")); status != 429 {
		t.Fatalf("junk past the limit: %d, want 429 before anything is read", status)
	}
	// Others go on, up to the cap on pending requests in all.
	for i := 3; i < 5; i++ {
		if err := s.client("198.51.100.1").PostLinkRequest(ctx, reqs[i]); err != nil {
			t.Fatal(err)
		}
	}
	err = s.client("198.51.100.2").PostLinkRequest(ctx, reqs[5])
	wantLimited(t, "a request past the cap", err, time.Minute)
	if !errors.Is(err, sigchain.ErrLinkRequestsFull) {
		t.Fatalf("a request past the cap: %v, want ErrLinkRequestsFull", err)
	}
	if status, reason := s.postLink(t, "198.51.100.4", "application/octet-stream", reqs[6].Bytes()); status != 429 || reason != sigchain.ReasonLinkRequests {
		t.Fatalf("past the cap: %d %s, want 429 with reason %s", status, reason, sigchain.ReasonLinkRequests)
	}
	if err := s.client("198.51.100.3").PostLinkRequest(ctx, reqs[0]); err != nil {
		t.Fatalf("a stored request again, at the cap: %v", err)
	}
	if stats := s.handler.Stats().LinkRequests; stats.Stored != 5 || stats.Full != 2 {
		t.Fatalf("stats %+v", stats)
	}

	// Guessing codes is held to the read limit.
	guesser := s.client("203.0.113.77")
	for i := range 4 {
		var guess sigchain.LinkCode
		guess[0] = byte(i)
		if _, _, err := guesser.FetchLinkRequest(ctx, guess); !errors.Is(err, sigchain.ErrNoLinkRequest) {
			t.Fatal(err)
		}
	}
	_, _, err = guesser.FetchLinkRequest(ctx, reqs[0].Code())
	wantLimited(t, "the fifth read", err, 15*time.Second)
	if _, _, err := s.client("203.0.113.78").FetchLinkRequest(ctx, reqs[0].Code()); err != nil {
		t.Fatalf("another address reading: %v", err)
	}
	for range 2 {
		if _, _, err := guesser.DevicePerson(ctx, reqs[0].Device()); !errors.Is(err, sigchain.ErrNoDevice) {
			t.Fatal(err)
		}
	}
	_, _, err = guesser.DevicePerson(ctx, reqs[0].Device())
	wantLimited(t, "the third device read", err, 30*time.Second)

	limited := map[string]uint64{}
	for _, ls := range s.handler.Stats().Limiters {
		limited[ls.Endpoint+"/"+ls.Reason] += ls.Limited
	}
	if limited["link_post/ip"] != 2 || limited["link_get/ip"] != 1 || limited["device_get/ip"] != 1 {
		t.Fatalf("limited %v", limited)
	}
}

// testDeviceAppendAbuse appends, through the API, links that would give
// one device key to two people or make a person of a device: each is
// refused with 422 device_known and nothing is stored.
func testDeviceAppendAbuse(t *testing.T, open Open) {
	ctx := context.Background()
	st, _ := open(t)
	s := startDevices(t, st, sigchain.NoLimits())
	now := s.now
	alice, bob := NewPerson(t, Identity(t, 1), "alice@kez.lat", now), NewPerson(t, Identity(t, 2), "bob@kez.lat", now)
	dev := Identity(t, 11)
	alice.AddDevice(t, dev, now)
	appendAll(t, st, alice.Links)
	appendAll(t, st, bob.Links)
	c := s.client("192.0.2.1")
	for _, tc := range []struct {
		name string
		link *sigchain.Link
		key  kez.PublicKey
	}{
		{"bob adding alice's device", bob.TryAddDevice(t, dev, now), bob.ID.PublicKey()},
		{"alice adding bob's own key", alice.TryAddDevice(t, bob.ID, now), alice.ID.PublicKey()},
		{"the device starting a chain", NewPerson(t, dev, "dev@kez.lat", now).Links[0], dev.PublicKey()},
	} {
		err := c.Append(ctx, tc.link)
		if !errors.Is(err, sigchain.ErrDeviceKnown) || !errors.Is(err, sigchain.ErrInvalid) {
			t.Errorf("%s: %v, want ErrDeviceKnown", tc.name, err)
		}
	}
	wantHead(t, "alice", st, alice.ID.PublicKey(), alice.Links[1])
	wantHead(t, "bob", st, bob.ID.PublicKey(), bob.Links[0])
	if _, err := st.Head(ctx, dev.PublicKey()); !errors.Is(err, sigchain.ErrNotFound) {
		t.Errorf("the device's chain: %v", err)
	}
	wantDevice(t, "the device", deviceStore(t, st), dev.PublicKey(), alice.ID, false)
}

// testDevicePrekeys: a device publishes its own prekey; it cannot publish
// one for its person, for another person or another person's device, and
// a revoked device publishes none and has none served.
func testDevicePrekeys(t *testing.T, open Open) {
	ctx := context.Background()
	st, _ := open(t)
	s := startDevices(t, st, sigchain.NoLimits())
	now := s.now
	alice, bob := NewPerson(t, Identity(t, 1), "alice@kez.lat", now), NewPerson(t, Identity(t, 2), "bob@kez.lat", now)
	ad, gone, bd := Identity(t, 11), Identity(t, 12), Identity(t, 13)
	alice.AddDevice(t, ad, now)
	alice.AddDevice(t, gone, now)
	bob.AddDevice(t, bd, now)
	appendAll(t, st, alice.Links)
	appendAll(t, st, bob.Links)
	c := s.client("192.0.2.1")
	pbd := Prekey(t, bd, 1, now, time.Hour)
	for _, p := range []*session.Prekey{Prekey(t, ad, 1, now, time.Hour), Prekey(t, gone, 1, now, time.Hour), pbd} {
		if err := c.PublishPrekey(ctx, p); err != nil {
			t.Fatalf("a device's own prekey: %v", err)
		}
	}
	if err := c.Append(ctx, alice.RevokeDevice(t, gone.PublicKey(), now)); err != nil {
		t.Fatal(err)
	}
	day := 24 * time.Hour
	mine := Prekey(t, ad, 9, now.Add(time.Second), day)
	for _, tc := range []struct {
		name   string
		key    kez.PublicKey
		body   []byte
		status int
		reason string
	}{
		{"alice's device signing a record of alice", alice.ID.PublicKey(), record(t, resign(t, ad, Prekey(t, alice.ID, 9, now, day))), 422, ""},
		{"alice's device signing a record of bob's device", bd.PublicKey(), record(t, resign(t, ad, Prekey(t, bd, 9, now.Add(time.Second), day))), 422, ""},
		{"alice's device's own record under bob's device", bd.PublicKey(), record(t, mine), 422, ""},
		{"alice's device's own record under bob", bob.ID.PublicKey(), record(t, mine), 422, ""},
		{"the revoked device's new record", gone.PublicKey(), record(t, Prekey(t, gone, 9, now.Add(time.Second), day)), 422, sigchain.ReasonDeviceRevoked},
		{"a key on no chain", Identity(t, 14).PublicKey(), record(t, Prekey(t, Identity(t, 14), 9, now, day)), 404, sigchain.ReasonNoChain},
	} {
		status, reason := s.put(t, "192.0.2.1", tc.key.String(), octets, bytes.NewReader(tc.body))
		if status != tc.status || reason != tc.reason {
			t.Errorf("%s: %d %q, want %d %q", tc.name, status, reason, tc.status, tc.reason)
		}
	}
	if _, err := c.FetchPrekey(ctx, gone.PublicKey()); !errors.Is(err, sigchain.ErrNoPrekey) {
		t.Errorf("the revoked device's prekey: %v, want ErrNoPrekey", err)
	}
	if got, err := c.FetchPrekey(ctx, bd.PublicKey()); err != nil || !bytes.Equal(record(t, got), record(t, pbd)) {
		t.Errorf("bob's device's prekey after the abuse: %v", err)
	}
	if stats := s.handler.Stats().Prekeys; stats.Revoked != 1 || stats.Invalid != 4 || stats.Stored != 3 {
		t.Errorf("stats %+v", stats)
	}
}
