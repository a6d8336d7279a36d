package group

import (
	"context"
	"strconv"
	"testing"
)

// BenchmarkVerify verifies a chain of 256 members, each added by its own
// link (256 links, 256 signatures): what a new member's client does
// once.
func BenchmarkVerify(b *testing.B) {
	c := newCast(b)
	ch := newChain(b, c.alice, "Bench")
	for n := 1; n < 256; n++ {
		ch.add(c.alice, c.alice.PublicKey(), TypeAdd, AddBody([]NewMember{{Key: memberKey(b, n), Handle: "m" + strconv.Itoa(n) + "@kez.lat", Role: RoleMember}}))
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		st, err := Verify(ctx, ch.links, nil, fixedClock(ch.ctime))
		if err != nil || len(st.Members()) != 256 {
			b.Fatal(err)
		}
	}
}
