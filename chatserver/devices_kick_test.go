package chatserver_test

import (
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/chatserver"
	"github.com/kez-lat/kez-chat/internal/wire"
)

// TestKickerClosesEveryConnection: a revoked device that holds more
// connections than one page of the kicker's connection list (a stolen
// device opening many, to outlast the kick) has every one closed, not
// only the first page's.
func TestKickerClosesEveryConnection(t *testing.T) {
	chatserver.SetKickPageSize(t, 2)
	r := startReplicas(t, 1, chatserver.MailLimits{})
	alice := newDevicePerson(t, r.sigURL, r.urls[0], "alice")
	phone := alice.addDevice(t, r.urls[0], "phone")
	const n = 5
	conns := make([]*deviceConn, n)
	for i := range conns {
		conns[i] = deviceLogin(t, r.natsURL, phone)
	}
	alice.revoke(t, r.urls[0], phone.PublicKey())
	deadline := time.After(10 * time.Second) // past the second sweep
	for i, c := range conns {
		select {
		case <-c.closed:
		case <-deadline:
			t.Fatalf("connection %d of %d of the revoked device stayed open", i+1, n)
		}
	}
}

// TestUsersCannotTouchRevocationNotices: a user (here a device) may
// neither publish a revocation notice (to make the gates forget what
// they know of a key) nor subscribe to them (to learn of revocations, or
// to take them from a queue group: the gates subscribe without one).
func TestUsersCannotTouchRevocationNotices(t *testing.T) {
	r := startReplicas(t, 1, chatserver.MailLimits{})
	alice := newDevicePerson(t, r.sigURL, r.urls[0], "alice")
	d := deviceLogin(t, r.natsURL, alice.addDevice(t, r.urls[0], "phone"))
	d.nc.Publish(wire.RevokedSubject, []byte(alice.id.PublicKey().String()))
	d.wantViolation(t, wire.RevokedSubject)
	if _, err := d.nc.QueueSubscribeSync(wire.RevokedSubject, "gates"); err != nil {
		t.Fatal(err)
	}
	d.wantViolation(t, wire.RevokedSubject)
}
