package group

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/kez-lat/kez-chat/kez"
)

// A lying sig-server (a stranger's own domain: any member's client
// fetches from it after a group-update) serves a chain of the most links
// the format allows, each as large as it may be: 100,000 × 64 KiB, 6.4 GB
// a client kept in memory before verifying any (here twice
// MaxChainBytes stands for it). Fetch stops past MaxChainBytes with
// ErrBadAnswer.
func TestFetchBoundsChainBytes(t *testing.T) {
	cs := newCast(t)
	var ms []NewMember
	for i := range MaxMembersPerLink {
		ms = append(ms, NewMember{Key: memberKey(t, i), Handle: handleOf(fmt.Sprintf("member%d", i)), Role: RoleMember})
	}
	body := AddBody(ms)
	var mu sync.Mutex
	links := map[uint64][]byte{}
	link := func(seqno uint64) []byte {
		mu.Lock()
		defer mu.Unlock()
		if b, ok := links[seqno]; ok {
			return b
		}
		var prev [32]byte
		links[seqno] = rawLink(t, cs.mal, testGroup, seqno, &prev, vectorNow, cs.mal.PublicKey(), TypeAdd, body)
		return links[seqno]
	}
	size := len(link(2))
	head := uint64(2*MaxChainBytes/size + MaxLinksPerResponse)
	var served atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		since, _ := strconv.ParseUint(r.URL.Query().Get("since"), 10, 64)
		var raw []string
		for s := since + 1; s <= min(head, since+MaxLinksPerResponse); s++ {
			raw = append(raw, string(link(s)))
		}
		served.Add(int64(len(raw)))
		fmt.Fprintf(w, `{"links":[%s],"head":{"seqno":%d,"id":"%s"}}`, strings.Join(raw, ","), head, linkCID(link(head)))
	}))
	t.Cleanup(srv.Close)
	_, _, err := NewClient(srv.URL, nil).Fetch(context.Background(), testGroup, 0)
	if !errors.Is(err, ErrBadAnswer) {
		t.Fatalf("Fetch of an endless chain: %v", err)
	}
	if max := MaxChainBytes/size + 2*MaxLinksPerResponse; served.Load() > int64(max) {
		t.Fatalf("the client read %d links of %d bytes, at most %d due", served.Load(), size, max)
	}
}

// The links a client verifies and keeps are bounded in bytes too, fetched
// in one go or a few at a time: an admin adding and removing 256 members
// again and again makes a chain that stops verifying past MaxChainBytes.
func TestVerifyBoundsChainBytes(t *testing.T) {
	cs := newCast(t)
	c := newChain(t, cs.alice, "")
	var ms []NewMember
	var keys []kez.PublicKey
	for i := range MaxMembersPerLink {
		ms = append(ms, NewMember{Key: memberKey(t, i), Handle: handleOf(fmt.Sprintf("member%d", i)), Role: RoleMember})
		keys = append(keys, ms[i].Key)
	}
	add, remove := AddBody(ms), RemoveBody(keys...)
	links, prev, total := c.links, c.st.head, len(c.links[0])
	for seqno := uint64(2); total <= MaxChainBytes; seqno++ {
		typ, body := TypeAdd, add
		if seqno%2 == 1 {
			typ, body = TypeRemove, remove
		}
		b := rawLink(t, cs.alice, testGroup, seqno, &prev, c.ctime, cs.alice.PublicKey(), typ, body)
		l, err := ParseLink(b)
		if err != nil {
			t.Fatal(err)
		}
		links, prev, total = append(links, b), l.id, total+len(b)
	}
	ctx, clock := context.Background(), fixedClock(vectorNow)
	st, err := Verify(ctx, links[:len(links)-1], allDevices, clock)
	if err != nil {
		t.Fatalf("the chain up to %d bytes: %v", MaxChainBytes, err)
	}
	if _, err := Verify(ctx, links, allDevices, clock); !errors.Is(err, ErrBrokenChain) {
		t.Fatalf("the whole chain past %d bytes: %v", MaxChainBytes, err)
	}
	if _, err := st.Extend(ctx, links[len(links)-1:], allDevices, clock); !errors.Is(err, ErrBrokenChain) {
		t.Fatalf("a link past %d bytes: %v", MaxChainBytes, err)
	}
}
