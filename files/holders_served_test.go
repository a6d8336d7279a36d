package files

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/files/format"
	"github.com/libp2p/go-libp2p/core/peer"
)

// The served pairs are bounded and shared by every key: maxServedPairs
// fresh keys push out the oldest pair (which is why a kept have is
// refreshed without them, TestOwnerKeepsRefreshedHave), and a pair seen
// again is remembered from then.
func TestServedSetBounded(t *testing.T) {
	tr, err := format.BuildTree(bytes.NewReader([]byte("small public file")))
	must(t, err)
	c, now := tr.CID(), time.Now()
	var s servedSet
	honest := peer.ID("honest")
	s.add(honest, c, now)
	for i := range maxServedPairs - 1 {
		s.add(peer.ID(fmt.Sprint("stranger", i)), c, now)
	}
	if !s.has(honest, c, now) {
		t.Fatal("the honest pair forgotten before the memory was full")
	}
	s.add("one more", c, now)
	if s.has(honest, c, now) || !s.has("one more", c, now) {
		t.Fatal("the oldest pair was not the one pushed out")
	}
	if s.has("stranger0", c, now.Add(servedLife)) {
		t.Fatal("a pair remembered after servedLife")
	}
}
