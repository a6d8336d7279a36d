package chat

import (
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/session"
	"github.com/kez-lat/kez-chat/sigchain"
)

// A group of 256 members: alice adds 255 in one link; 252 of them are
// registered identities with a prekey and no client (they receive into
// their inboxes), three run clients and read. Alice's first message
// costs one pairwise group key per member device and one envelope; her
// second only the envelope. The 255 group-updates and the 255 keys each
// go to the gate as one request with a payload per device: all of it
// under the default limits (one send per device took 510 messages, over
// a person's burst of 500).
func TestGroup256Members(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice := openClient(t, st, st.NewUser(t, "alice"))
	var readers []*testClient
	handles := make([]string, 0, 255)
	for i := range 3 {
		u := st.NewUser(t, fmt.Sprintf("reader%d", i))
		readers = append(readers, openClient(t, st, u))
		handles = append(handles, u.Handle.String())
	}
	sc := &sigchain.Client{BaseURL: st.SigServerURL}
	start := time.Now()
	for i := range 252 {
		u := st.NewUser(t, fmt.Sprintf("m%03d", i))
		pk, err := session.NewPrekey(rand.Reader, u.Identity, 1, time.Now(), 24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if err := sc.PublishPrekey(testCtx(t), &pk.Public); err != nil {
			t.Fatal(err)
		}
		handles = append(handles, u.Handle.String())
	}
	t.Logf("252 members registered in %v", time.Since(start))
	ctx := testCtx(t)
	name := "crowd@" + st.Domain
	if _, err := alice.CreateGroup(ctx, "crowd", "256"); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if err := alice.AddGroupMembers(ctx, "crowd", handles...); err != nil {
		t.Fatal(err)
	}
	t.Logf("255 members added and told in %v", time.Since(start))
	start = time.Now()
	mustGroupSend(t, alice, name, "hello, 255 of you")
	t.Logf("the first message (255 keys and one envelope) sent in %v", time.Since(start))
	start = time.Now()
	mustGroupSend(t, alice, name, "and again")
	t.Logf("the second message sent in %v", time.Since(start))
	for _, r := range readers {
		g := waitGroup(t, r, name, func(g *Group) bool { return len(g.Members) == 256 })
		if g.Epoch != 2 {
			t.Fatalf("%s sees epoch %d", r.user.Name, g.Epoch)
		}
		waitGroupText(t, r, name, "hello, 255 of you")
		waitGroupText(t, r, name, "and again")
	}
	// Every member's inbox holds one copy of each of the two envelopes,
	// beside the group-update and the group key.
	js := st.JetStream(t)
	for _, i := range []int{0, 100, 251} {
		u := st.NewUser(t, fmt.Sprintf("m%03d", i))
		if n := storedOn(t, js, "kez.v1.inbox."+u.Key.String()+"."+alice.DeviceKey().String()); n != 4 {
			t.Errorf("m%03d's inbox holds %d messages from alice, want 4", i, n)
		}
	}
}
