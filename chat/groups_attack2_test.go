package chat

// More attacks on groups (docs/spec/chat.md §10.1, §10.4, §10.5, §10.6),
// from a stranger holding one registered key and from members.

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/group"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
)

// chainServer serves one group chain, whatever is asked, and counts the
// requests.
type chainServer struct {
	links []*group.Link
	hits  atomic.Int64
}

func (s *chainServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.hits.Add(1)
	var raw []string
	for _, l := range s.links {
		raw = append(raw, string(l.Bytes()))
	}
	head := s.links[len(s.links)-1]
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"links":[%s],"head":{"seqno":%d,"id":%q}}`, strings.Join(raw, ","), head.Seqno(), head.ID().String())
}

// A stranger (mal, registered on bob's domain) signs a chain of its own
// for team@<bob's domain> that lists bob, serves it from a server of its
// choosing (here one on the loopback, which the client reaches with the
// HTTP client it keeps for its own servers) and sends bob a group-update
// naming that server. The group's chain lives on the user's own
// sig-server (§10.1): bob must neither ask the stranger's server nor pin
// the fake chain, which would squat the name in his client (the real
// team@ would then look like a fork).
func TestGroupUpdateOwnDomainForeignServer(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	ctx := testCtx(t)
	mal := newPerson(t, st, "mal", 1)
	bob := newPerson(t, st, "bob", 1)
	name := "team@" + st.Domain

	create, err := group.NewCreate(mal.user.Identity, mal.user.Key, name, mal.user.Handle.String(), "", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	st1, err := group.Verify(ctx, [][]byte{create.Bytes()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	add, err := group.NewLink(mal.user.Identity, mal.user.Key, st1, group.TypeAdd,
		group.AddBody([]group.NewMember{{Key: bob.user.Key, Handle: bob.user.Handle.String(), Role: group.RoleMember}}), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	fake := &chainServer{links: []*group.Link{create, add}}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)

	m := mal.devices[0]
	body := marshalGroupUpdate(groupUpdate{Group: name, Head: add.ID(), Seqno: 2, SigServer: srv.URL})
	sendPairwise(t, m, bob.user.Key, bob.user.Handle.String(), KindGroupUpdate, body)
	// A text after it: once bob has it, the update was handled.
	sendPairwise(t, m, bob.user.Key, bob.user.Handle.String(), KindText, []byte("marker"))
	b := bob.devices[0]
	receiveUntil(t, b, "mal's marker", func(int) bool { return b.Stats().Received > 0 })

	if n := fake.hits.Load(); n != 0 {
		t.Errorf("bob asked the server a stranger named %d times", n)
	}
	gs, err := b.Groups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gs {
		if g.Name == name {
			t.Fatalf("bob pinned a chain of %s served by a stranger's server: %+v", name, g)
		}
	}
}
