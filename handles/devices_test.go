package handles

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/ratelimit"
	"github.com/kez-lat/kez-chat/sigchain"
)

// person is a registered user and their chain as the sig-server has it.
type person struct {
	id    *kez.Identity
	st    *sigchain.State
	links [][]byte // the links appended by the test
}

func (s *stack) person(t testing.TB, name string) *person {
	t.Helper()
	id := s.register(t, name)
	st, err := s.sigc.FetchVerified(context.Background(), id.PublicKey(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return &person{id: id, st: st}
}

// appendLink signs a link of p's chain, appends it at the sig-server and
// returns its bytes.
func (s *stack) appendLink(t testing.TB, p *person, typ string, body []byte) []byte {
	t.Helper()
	l, err := sigchain.NewLink(p.id, p.st, typ, body, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.sigc.Append(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	if p.st, err = p.st.Extend([]*sigchain.Link{l}); err != nil {
		t.Fatal(err)
	}
	p.links = append(p.links, l.Bytes())
	return l.Bytes()
}

// addDevice makes a new device key, its link request, and p's add_device
// link for it, appended to p's chain.
func (s *stack) addDevice(t testing.TB, p *person, name string) (*kez.Identity, []byte) {
	t.Helper()
	dev := newIdentity(t)
	req, err := sigchain.NewLinkRequest(dev, name, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return dev, s.appendLink(t, p, sigchain.TypeAddDevice, sigchain.AddDeviceBody(req))
}

func (s *stack) client() *Client { return &Client{BaseURL: s.chat.URL} }

func TestDevicesRegisterAndLookUp(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, "kez.lat")
	var revoked []string
	var mu sync.Mutex
	srv, err := NewServer(ServerConfig{Domain: "kez.lat", Store: s.reg, SigServer: s.sigc, Logger: quietLog, Limits: NoLimits(),
		DeviceRevoked: func(_ context.Context, person, device kez.PublicKey) {
			mu.Lock()
			defer mu.Unlock()
			revoked = append(revoked, person.String()[:6]+"/"+device.String()[:6])
		}})
	if err != nil {
		t.Fatal(err)
	}
	s.server = srv
	s.chat.Config.Handler = srv
	c := s.client()

	alice := s.person(t, "alice")
	laptop, link := s.addDevice(t, alice, "laptop")
	info, created, err := c.RegisterDevice(ctx, link)
	if err != nil || !created {
		t.Fatalf("register: %+v %v %v", info, created, err)
	}
	want := DeviceInfo{Person: alice.id.PublicKey().String(), Handle: "alice@kez.lat", Device: laptop.PublicKey().String(), Name: "laptop"}
	if *info != want {
		t.Fatalf("answer %+v, want %+v", *info, want)
	}
	if _, created, err := c.RegisterDevice(ctx, link); err != nil || created {
		t.Fatalf("sent again: created %v, %v", created, err)
	}
	got, err := c.LookupDevice(ctx, laptop.PublicKey())
	if err != nil || got.Person != want.Person || got.Handle != want.Handle || got.Revoked {
		t.Fatalf("lookup: %+v %v", got, err)
	}
	if got, err := c.LookupDevice(ctx, alice.id.PublicKey()); err != nil || got.Person != want.Person || got.Name != PrimaryName {
		t.Fatalf("lookup of the person's own key: %+v %v", got, err)
	}
	if _, err := c.LookupDevice(ctx, newIdentity(t).PublicKey()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("lookup of a stranger: %v", err)
	}
	if resp := get(t, s.chat.URL+DevicesPath+"/not-a-key", nil); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("lookup of a non-key: %d", resp.StatusCode)
	}

	// Revocation: answered as revoked, the hook runs (again for a
	// revocation sent again), and the device is gone for good.
	rlink := s.appendLink(t, alice, sigchain.TypeRevokeDevice, sigchain.RevokeDeviceBody(laptop.PublicKey()))
	for range 2 {
		if info, _, err := c.RegisterDevice(ctx, rlink); err != nil || !info.Revoked {
			t.Fatalf("revoke: %+v %v", info, err)
		}
	}
	if got, err := c.LookupDevice(ctx, laptop.PublicKey()); err != nil || !got.Revoked || got.Person != want.Person {
		t.Fatalf("lookup after the revocation: %+v %v", got, err)
	}
	mu.Lock()
	if w := alice.id.PublicKey().String()[:6] + "/" + laptop.PublicKey().String()[:6]; fmt.Sprint(revoked) != fmt.Sprint([]string{w, w}) {
		t.Errorf("hook calls %v", revoked)
	}
	mu.Unlock()
	// The attacker's replay of the old add link.
	if _, _, err := c.RegisterDevice(ctx, link); !errors.Is(err, ErrDeviceRevoked) {
		t.Fatalf("replayed add link: %v, want ErrDeviceRevoked", err)
	}
	// A device key may not claim a handle.
	phone, plink := s.addDevice(t, alice, "phone")
	if _, _, err := c.RegisterDevice(ctx, plink); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Claim(ctx, phone, Handle{Name: "phone", Domain: "kez.lat"}); !errors.Is(err, ErrTaken) {
		t.Fatalf("claim by a device key: %v, want a 409", err)
	}
	// The person's own key, revoked as a device, still renews its handle.
	s.appendLink(t, alice, sigchain.TypeRevokeDevice, sigchain.RevokeDeviceBody(alice.id.PublicKey()))
	if _, _, err := c.RegisterDevice(ctx, s.lastLink(t, alice)); err != nil {
		t.Fatal(err)
	}
	if _, created, err := c.Claim(ctx, alice.id, Handle{Name: "alice", Domain: "kez.lat"}); err != nil || created {
		t.Fatalf("renewal by a revoked primary: %v %v", created, err)
	}
	if got, err := c.LookupDevice(ctx, alice.id.PublicKey()); err != nil || !got.Revoked {
		t.Fatalf("lookup of a revoked primary: %+v %v", got, err)
	}
}

// lastLink returns the bytes of the last link of p's chain.
func (s *stack) lastLink(t testing.TB, p *person) []byte {
	t.Helper()
	return p.links[len(p.links)-1]
}

// TestDevicesAttacks sends the links an attacker has or can make.
func TestDevicesAttacks(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, "kez.lat")
	c := s.client()
	alice, mallory := s.person(t, "alice"), s.person(t, "mallory")
	laptop, link := s.addDevice(t, alice, "laptop")
	if _, _, err := c.RegisterDevice(ctx, link); err != nil {
		t.Fatal(err)
	}

	check := func(what string, body []byte, status int, want error) {
		t.Helper()
		_, _, err := c.RegisterDevice(ctx, body)
		var se *ServerError
		if !errors.As(err, &se) || se.StatusCode != status || !errors.Is(err, want) {
			t.Errorf("%s: %v; want %d matching %v", what, err, status, want)
		}
	}
	// Mallory's link with alice's key in place of his: the signature is
	// mallory's, so it does not verify as alice's.
	dev := newIdentity(t)
	req, err := sigchain.NewLinkRequest(dev, "implant", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ml, err := sigchain.NewLink(mallory.id, mallory.st, sigchain.TypeAddDevice, sigchain.AddDeviceBody(req), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	forged := bytes.Replace(ml.Bytes(), []byte(mallory.id.PublicKey().String()), []byte(alice.id.PublicKey().String()), 1)
	check("a link signed by someone else", forged, 422, ErrBadDeviceLink)
	// Alice's device request inside mallory's own add link: mallory signed
	// it and the request is the laptop's, but the laptop is alice's.
	areq := requestOf(t, link)
	stolen, err := sigchain.NewLink(mallory.id, mallory.st, sigchain.TypeAddDevice, sigchain.AddDeviceBody(areq), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	check("another person's device", stolen.Bytes(), 409, ErrDeviceTaken)
	// Revoking alice's laptop with mallory's link (made from a state
	// where his stolen add link went through).
	mst, err := mallory.st.Extend([]*sigchain.Link{stolen})
	if err != nil {
		t.Fatal(err)
	}
	mrev, err := sigchain.NewLink(mallory.id, mst, sigchain.TypeRevokeDevice, sigchain.RevokeDeviceBody(laptop.PublicKey()), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	check("revoking another person's device", mrev.Bytes(), 404, ErrNotFound)
	if got, err := c.LookupDevice(ctx, laptop.PublicKey()); err != nil || got.Revoked || got.Handle != "alice@kez.lat" {
		t.Fatalf("the laptop after the attacks: %+v %v", got, err)
	}
	// A person with a chain but no handle here.
	nobody := &person{id: newIdentity(t)}
	s.startChain(t, nobody.id, "")
	if nobody.st, err = s.sigc.FetchVerified(ctx, nobody.id.PublicKey(), nil); err != nil {
		t.Fatal(err)
	}
	_, nlink := s.addDevice(t, nobody, "x")
	check("a person without a handle", nlink, 404, ErrNotFound)
	// A device of alice posing as a person: its own link for another key.
	preq, err := sigchain.NewLinkRequest(newIdentity(t), "y", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pl, err := sigchain.NewLink(laptop, nil, sigchain.TypeEldest,
		sigchain.EldestBody(laptop.PublicKey(), laptop.EncryptionKey(0).PublicKey(), 0, ""), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pst, err := sigchain.Verify([]*sigchain.Link{pl})
	if err != nil {
		t.Fatal(err)
	}
	padd, err := sigchain.NewLink(laptop, pst, sigchain.TypeAddDevice, sigchain.AddDeviceBody(preq), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	check("a device acting as a person", padd.Bytes(), 404, ErrNotFound)
	// Junk and links of other types.
	check("junk", []byte("hello"), 422, ErrBadDeviceLink)
	check("an eldest link", pl.Bytes(), 422, ErrBadDeviceLink)
	tampered := bytes.Replace(link, []byte(`"laptop"`), []byte(`"laptoq"`), 1)
	check("a tampered link", tampered, 422, ErrBadDeviceLink)
	check("an oversized body", bytes.Repeat([]byte("a"), MaxDeviceLinkBody+1), 413, ErrBadClaim)
}

// requestOf returns the link request inside an add_device link.
func requestOf(t testing.TB, link []byte) *sigchain.LinkRequest {
	t.Helper()
	ch, err := sigchain.VerifyDeviceLink(link)
	if err != nil {
		t.Fatal(err)
	}
	return ch.Request
}

// TestDevicesBound adds devices past MaxDevices: the one too many is
// refused and changes nothing.
func TestDevicesBound(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, "kez.lat")
	c := s.client()
	alice := s.person(t, "alice")
	var first *kez.Identity
	for i := 1; i < MaxDevices; i++ {
		d, link := s.addDevice(t, alice, fmt.Sprintf("d%d", i))
		if first == nil {
			first = d
		}
		if _, _, err := c.RegisterDevice(ctx, link); err != nil {
			t.Fatalf("device %d: %v", i+1, err)
		}
	}
	// The chain refuses a 33rd device; a link signed anyway (its chain
	// state faked) reaches the registry, which refuses it too.
	dev := newIdentity(t)
	req, err := sigchain.NewLinkRequest(dev, "one too many", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	st := s.chainWithout(t, alice, first)
	l, err := sigchain.NewLink(alice.id, st, sigchain.TypeAddDevice, sigchain.AddDeviceBody(req), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = c.RegisterDevice(ctx, l.Bytes())
	if !errors.Is(err, ErrTooManyDevices) {
		t.Fatalf("device %d: %v, want ErrTooManyDevices", MaxDevices+1, err)
	}
	if _, err := c.LookupDevice(ctx, dev.PublicKey()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the refused device: %v", err)
	}
}

// chainWithout returns p's chain with d revoked, as a state only (the
// sig-server does not get the link): the state a dishonest signer would
// start its 33rd add_device link from.
func (s *stack) chainWithout(t testing.TB, p *person, d *kez.Identity) *sigchain.State {
	t.Helper()
	l, err := sigchain.NewLink(p.id, p.st, sigchain.TypeRevokeDevice, sigchain.RevokeDeviceBody(d.PublicKey()), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	st, err := p.st.Extend([]*sigchain.Link{l})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestDevicesFlood floods POST /v1/devices from one address and with one
// person's links: both limits answer 429 with Retry-After, before any
// signature is checked for the address limit.
func TestDevicesFlood(t *testing.T) {
	ctx := context.Background()
	lim := ratelimit.Limit{N: 3, Per: time.Hour}
	s, _ := limitedStack(t, only(func(l *Limits) { l.DevicesPerIP = lim }))
	for i := range 3 {
		if status, _ := postFrom(t, s.chat.URL+DevicesPath, "192.0.2.1", []byte("junk")); status != 422 {
			t.Fatalf("junk %d: %d", i, status)
		}
	}
	status, _ := postFrom(t, s.chat.URL+DevicesPath, "192.0.2.1", []byte("junk"))
	if status != http.StatusTooManyRequests {
		t.Fatalf("the 4th junk post from one address: %d, want 429", status)
	}
	if status, _ := postFrom(t, s.chat.URL+DevicesPath, "192.0.2.2", []byte("junk")); status != 422 {
		t.Fatalf("another address: %d", status)
	}

	s, _ = limitedStack(t, only(func(l *Limits) { l.DevicesPerKey = lim }))
	c := s.client()
	alice := s.person(t, "alice")
	_, link := s.addDevice(t, alice, "laptop")
	for range 3 {
		if _, _, err := c.RegisterDevice(ctx, link); err != nil {
			t.Fatal(err)
		}
	}
	_, _, err := c.RegisterDevice(ctx, link)
	wantLimited(t, "the 4th link of one person", err, time.Hour/3)
}

// postFrom posts body as if from the client address ip (the stack trusts
// loopback as its proxy).
func postFrom(t testing.TB, url, ip string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Forwarded-For", ip)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// FuzzDeviceLinkBody posts arbitrary bodies to POST /v1/devices: the
// server never fails (500) nor panics, and nothing but a verified device
// link of a person holding a handle changes the registry.
func FuzzDeviceLinkBody(f *testing.F) {
	s := newStack(f, "kez.lat")
	alice := s.person(f, "alice")
	_, link := s.addDevice(f, alice, "laptop")
	f.Add(link)
	f.Add(s.appendLink(f, alice, sigchain.TypeRevokeDevice, sigchain.RevokeDeviceBody(alice.id.PublicKey())))
	f.Add([]byte(`{"type":"add_device"}`))
	f.Add(bytes.Replace(link, []byte("add_device"), []byte("revoke_device"), 1))
	f.Fuzz(func(t *testing.T, b []byte) {
		rec := httptest.NewRecorder()
		s.server.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, DevicesPath, bytes.NewReader(b)))
		switch rec.Code {
		case http.StatusOK, http.StatusCreated:
			if _, err := sigchain.VerifyDeviceLink(bytes.TrimSpace(b)); err != nil {
				t.Fatalf("accepted %q, which does not verify: %v", b, err)
			}
		case http.StatusInternalServerError:
			t.Fatalf("500 for %q: %s", b, rec.Body)
		}
	})
}
