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
	dev, req := NewDeviceRequest(t, name)
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
	return AppendLinkAt(t, s.SigServerURL, u.Identity, typ, body)
}

// RegisterDeviceLink gives a device link of a chain to the chat-server.
func (s *Stack) RegisterDeviceLink(t testing.TB, l *sigchain.Link) {
	t.Helper()
	RegisterDeviceLinkAt(t, s.ServerURL, l)
}

// NewDeviceRequest makes a device key and its link request under name,
// as "kez link" does.
func NewDeviceRequest(t testing.TB, name string) (*kez.Identity, *sigchain.LinkRequest) {
	t.Helper()
	dev, _, err := kez.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	req, err := sigchain.NewLinkRequest(dev, name, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return dev, req
}

// AppendLinkAt appends a link of type typ with body, signed by id, to id's
// chain at the sig-server sigURL (on top of the chain as that server holds
// it), and returns it.
func AppendLinkAt(t testing.TB, sigURL string, id *kez.Identity, typ string, body []byte) *sigchain.Link {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sc := &sigchain.Client{BaseURL: sigURL}
	state, err := sc.FetchVerified(ctx, id.PublicKey(), nil)
	if err != nil {
		t.Fatalf("stacktest: reading the chain of %s: %v", id.PublicKey(), err)
	}
	l, err := sigchain.NewLink(id, state, typ, body, time.Now())
	if err != nil {
		t.Fatalf("stacktest: %s of %s: %v", typ, id.PublicKey(), err)
	}
	if err := sc.Append(ctx, l); err != nil {
		t.Fatalf("stacktest: appending %s to the chain of %s: %v", typ, id.PublicKey(), err)
	}
	return l
}

// RegisterDeviceLinkAt gives a device link of a chain to the chat-server
// at serverURL and returns its answer, and whether it added the device.
func RegisterDeviceLinkAt(t testing.TB, serverURL string, l *sigchain.Link) (*handles.DeviceInfo, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, created, err := (&handles.Client{BaseURL: serverURL}).RegisterDevice(ctx, l.Bytes())
	if err != nil {
		t.Fatalf("stacktest: registering a device link with the chat-server: %v", err)
	}
	return info, created
}
