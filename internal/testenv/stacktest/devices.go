package stacktest

import (
	"context"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// AddDevice makes a device key for u the way "kez link" and "kez devices
// add" (or "kez recover") do: a link request signed by the new key, the
// add_device link u's primary key appends to u's chain at the sig-server,
// and that link registered with the chat-server (so the device may log
// in to NATS). Any failure fails the test.
func (s *Stack) AddDevice(t testing.TB, u *User, name string) *kez.Identity {
	t.Helper()
	dev, _, err := kez.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	req, err := sigchain.NewLinkRequest(dev, name, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	s.RegisterDeviceLink(t, s.AppendLink(t, u, sigchain.TypeAddDevice, sigchain.AddDeviceBody(req)))
	return dev
}

// RevokeDevice revokes u's device dev, at the sig-server and the
// chat-server.
func (s *Stack) RevokeDevice(t testing.TB, u *User, dev kez.PublicKey) {
	t.Helper()
	s.RegisterDeviceLink(t, s.AppendLink(t, u, sigchain.TypeRevokeDevice, sigchain.RevokeDeviceBody(dev)))
}

// AppendLink appends a link of type typ with body to u's chain at the
// sig-server, signed by u's primary key, and returns it.
func (s *Stack) AppendLink(t testing.TB, u *User, typ string, body []byte) *sigchain.Link {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sc := &sigchain.Client{BaseURL: s.SigServerURL}
	state, err := sc.FetchVerified(ctx, u.Key, nil)
	if err != nil {
		t.Fatalf("stacktest: reading %s's chain: %v", u.Name, err)
	}
	l, err := sigchain.NewLink(u.Identity, state, typ, body, time.Now())
	if err != nil {
		t.Fatalf("stacktest: %s of %s: %v", typ, u.Name, err)
	}
	if err := sc.Append(ctx, l); err != nil {
		t.Fatalf("stacktest: appending %s to %s's chain: %v", typ, u.Name, err)
	}
	return l
}

// RegisterDeviceLink gives a device link of a chain to the chat-server.
func (s *Stack) RegisterDeviceLink(t testing.TB, l *sigchain.Link) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, _, err := (&handles.Client{BaseURL: s.ServerURL}).RegisterDevice(ctx, l.Bytes()); err != nil {
		t.Fatalf("stacktest: registering a device link with the chat-server: %v", err)
	}
}
