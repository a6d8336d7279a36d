package chat

import (
	"database/sql"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/group"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
)

// A client killed with SIGKILL after it stored (and acknowledged) the
// batch holding a group-update, but before it acted on it, acts on it
// when it next starts: the invitation to a group is not lost. The
// sig-server holds the killed client's fetch of the group's chain, so
// the kill lands exactly there.
func TestCrashAfterGroupUpdateLosesNothing(t *testing.T) {
	var hold atomic.Bool
	arrived := make(chan struct{}, 1)
	release := make(chan struct{})
	defer func() {
		if hold.Swap(false) {
			close(release)
		}
	}()
	wrap := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if hold.Load() && r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, group.GroupsPath+"/") {
				select {
				case arrived <- struct{}{}:
				default:
				}
				select {
				case <-release:
				case <-r.Context().Done():
				}
				http.Error(w, "held by the test", http.StatusServiceUnavailable)
				return
			}
			h.ServeHTTP(w, r)
		})
	}
	st := stacktest.Start(t, stacktest.Options{WrapSigServer: wrap})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	home := filepath.Join(t.TempDir(), "bob")
	setup := openClientIn(t, st, bu, home) // bob's client ran once: its prekey is out
	if err := setup.Close(); err != nil {
		t.Fatal(err)
	}
	alice := openClient(t, st, au)
	ctx := testCtx(t)
	name := "team@" + st.Domain
	if _, err := alice.CreateGroup(ctx, "team", ""); err != nil {
		t.Fatal(err)
	}
	if err := alice.AddGroupMembers(ctx, "team", "bob"); err != nil {
		t.Fatal(err)
	}
	hold.Store(true)
	cmd := crashCmd(t, st, "bob", home, "receive")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-arrived:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("bob's client never fetched the group's chain")
	}
	// The batch is stored; its acknowledgement is on its way: once the
	// stream has it, nothing would deliver the group-update again.
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		info := st.ConsumerInfo(t, bu.Key)
		if info.NumAckPending == 0 && info.NumPending == 0 && info.Delivered.Consumer > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bob's delivery was never acknowledged: %+v", info)
		}
		<-tick.C
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	hold.Store(false)
	close(release)

	events := make(chan GroupEvent, 16)
	bob := openClientIn(t, st, bu, home, func(c *Config) {
		c.OnGroupEvent = func(e GroupEvent) {
			select {
			case events <- e:
			default:
			}
		}
	})
	for joined := false; !joined; {
		select {
		case e := <-events:
			joined = e.Group == name && e.Event == "invited" // alice is no contact of bob's (chat.md §10.9)
		case <-time.After(20 * time.Second):
			t.Fatalf("bob's client did not join %s after the restart; its groups: %v", name, groupNames(t, bob))
		}
	}
	mustGroupSend(t, alice, name, "after the crash")
	waitGroupText(t, bob, name, "after the crash")
}

// groupNames lists the groups c pins.
func groupNames(t testing.TB, c *testClient) []string {
	gs, err := c.Groups(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, g := range gs {
		out = append(out, g.Name)
	}
	return out
}

// TestRecordedGroupUpdatesBounded: group-updates anyone may send naming
// groups not pinned here are kept at most maxRecordedJoins, the newest;
// one for a pinned group is kept beside them.
func TestRecordedGroupUpdatesBounded(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice := openClient(t, st, st.NewUser(t, "alice"))
	ctx := testCtx(t)
	if _, err := alice.CreateGroup(ctx, "team", ""); err != nil {
		t.Fatal(err)
	}
	head, err := cid.Parse(testHead)
	if err != nil {
		t.Fatal(err)
	}
	now := alice.now()
	record := func(name string, at time.Time) {
		u := groupUpdate{Group: name, Head: head, Seqno: 3, SigServer: "https://sig.evil.test"}
		err := alice.db.write(ctx, func(tx *sql.Tx) error { return alice.recordUpdate(tx, u, marshalGroupUpdate(u), at) })
		if err != nil {
			t.Fatal(err)
		}
	}
	record("team@"+st.Domain, now)
	for i := range 3 * maxRecordedJoins {
		record(fmt.Sprintf("g%d@evil.test", i), now.Add(time.Duration(i)*time.Millisecond))
	}
	var n, pinned, newest int
	if err := alice.db.db.QueryRow(`SELECT count(*), count(*) FILTER (WHERE name = ?), count(*) FILTER (WHERE name = ?) FROM group_updates`,
		"team@"+st.Domain, fmt.Sprintf("g%d@evil.test", 3*maxRecordedJoins-1)).Scan(&n, &pinned, &newest); err != nil {
		t.Fatal(err)
	}
	if n != maxRecordedJoins+1 || pinned != 1 || newest != 1 {
		t.Fatalf("%d recorded (the pinned group's %d, the newest's %d)", n, pinned, newest)
	}
}
