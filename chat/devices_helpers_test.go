package chat

import (
	"context"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/session"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/nats-io/nats.go/jetstream"
)

// newDeviceWithPrekey is stacktest's AddDevice, and the device publishes
// a prekey (id) at the sig-server, as its client does when it first runs.
func newDeviceWithPrekey(t testing.TB, st *stacktest.Stack, u *stacktest.User, name string, id uint32) *kez.Identity {
	t.Helper()
	dev := st.AddDevice(t, u, name)
	pk, err := session.NewPrekey(rand.Reader, dev, id, time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := (&sigchain.Client{BaseURL: st.SigServerURL}).PublishPrekey(testCtx(t), &pk.Public); err != nil {
		t.Fatal(err)
	}
	return dev
}

// deviceLink returns a link of u's chain (as the sig-server holds it now)
// of type typ, signed, neither appended nor registered.
func deviceLink(t testing.TB, st *stacktest.Stack, u *stacktest.User, typ string, body []byte) *sigchain.Link {
	t.Helper()
	state, err := (&sigchain.Client{BaseURL: st.SigServerURL}).FetchVerified(testCtx(t), u.Key, nil)
	if err != nil {
		t.Fatal(err)
	}
	l, err := sigchain.NewLink(u.Identity, state, typ, body, time.Now())
	if err != nil {
		t.Fatalf("%s of %s: %v", typ, u.Name, err)
	}
	return l
}

// openDevice opens a client of u's linked device dev (it holds no primary
// key), in a fresh state folder.
func openDevice(t testing.TB, st *stacktest.Stack, u *stacktest.User, dev *kez.Identity, name string, opts ...clientOpt) *testClient {
	t.Helper()
	all := append([]clientOpt{func(c *Config) {
		c.Client.Identity, c.Client.Device, c.Client.Person = nil, dev, u.Key
	}}, opts...)
	tc := openClientIn(t, st, u, filepath.Join(t.TempDir(), u.Name+"-"+name), all...)
	return tc
}

// person is a user with several devices, each with its client; devices[0]
// is the primary.
type person struct {
	user    *stacktest.User
	devices []*testClient
}

// newPerson registers name with n devices (the primary and n-1 linked
// ones) and opens a client for each.
func newPerson(t testing.TB, st *stacktest.Stack, name string, n int, opts ...clientOpt) *person {
	t.Helper()
	u := st.NewUser(t, name)
	var devs []*kez.Identity
	for i := 1; i < n; i++ {
		devs = append(devs, st.AddDevice(t, u, fmt.Sprintf("%s-%d", name, i+1)))
	}
	p := &person{user: u, devices: []*testClient{openClient(t, st, u, opts...)}}
	for i, d := range devs {
		p.devices = append(p.devices, openDevice(t, st, u, d, fmt.Sprint(i+2), opts...))
	}
	return p
}

// waitContact receives on c until its contact handle is pinned (sent
// over from another of its person's devices) and cond holds for it.
func waitContact(t testing.TB, c *testClient, handle string, cond func(*Contact) bool) *Contact {
	t.Helper()
	var ct *Contact
	receiveUntil(t, c, "the contact "+handle, func(int) bool {
		var err error
		ct, err = c.Contact(testCtx(t), handle)
		return err == nil && cond(ct)
	})
	return ct
}

// storedOn returns how many messages the inbox stream holds under
// subject.
func storedOn(t testing.TB, js jetstream.JetStream, subject string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subject]
}
