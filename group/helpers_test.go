package group

import (
	"bytes"
	"context"
	"crypto/sha512"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/kez"
)

// vectorNow is the verifiers' clock in tests and vectors: 2026-01-01T00:00:00Z.
const vectorNow = 1767225600

func fixedClock(unix int64) VerifyOption {
	return WithClock(func() time.Time { return time.Unix(unix, 0) })
}

// seedIdentity derives the identity of the 64-byte seed made of byte b
// repeated (docs/spec/group.md §8).
func seedIdentity(t testing.TB, b byte) *kez.Identity {
	t.Helper()
	id, err := kez.FromSeed(bytes.Repeat([]byte{b}, 64))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// memberKey is the key of the n-th filler member of the vectors: the
// identity of the seed SHA-512("kez group vector member " || n).
func memberKey(t testing.TB, n int) kez.PublicKey {
	t.Helper()
	s := sha512.Sum512([]byte("kez group vector member " + strconv.Itoa(n)))
	id, err := kez.FromSeed(s[:])
	if err != nil {
		t.Fatal(err)
	}
	return id.PublicKey()
}

// The people of the tests: persons 0x01–0x05, and devices 0x11 (alice's)
// and 0x12 (revoked from alice in the vectors).
type cast struct {
	alice, bob, carol, dave, mal *kez.Identity
	aliceDev, aliceOld           *kez.Identity
}

func newCast(t testing.TB) *cast {
	return &cast{
		alice: seedIdentity(t, 1), bob: seedIdentity(t, 2), carol: seedIdentity(t, 3),
		dave: seedIdentity(t, 4), mal: seedIdentity(t, 5),
		aliceDev: seedIdentity(t, 0x11), aliceOld: seedIdentity(t, 0x12),
	}
}

const testGroup = "friends@kez.lat"

// oldDeviceRevoked is when alice's device 0x12 is revoked in the tests and
// vectors: after the fourth link of a chain made by newChain.
const oldDeviceRevoked = vectorNow - 3600 + 200

func handleOf(name string) string { return name + "@kez.lat" }

// chain builds a valid chain link by link, failing the test on any error.
type chain struct {
	t     testing.TB
	st    *State
	links [][]byte
	ctime int64
}

func newChain(t testing.TB, owner *kez.Identity, title string) *chain {
	t.Helper()
	c := &chain{t: t, ctime: vectorNow - 3600}
	l, err := NewCreate(owner, owner.PublicKey(), testGroup, handleOf("alice"), title, time.Unix(c.ctime, 0))
	if err != nil {
		t.Fatal(err)
	}
	c.push(l)
	return c
}

func (c *chain) push(l *Link) {
	c.t.Helper()
	st, err := c.st.Extend(context.Background(), [][]byte{l.Bytes()}, allDevices, fixedClock(max(vectorNow, c.ctime)))
	if err != nil {
		c.t.Fatalf("Extend %s: %v", l, err)
	}
	c.st, c.links = st, append(c.links, l.Bytes())
	c.ctime += 60
}

// add appends a link signed by signer for by, failing on error.
func (c *chain) add(signer kez.Signer, by kez.PublicKey, typ string, body []byte) *Link {
	c.t.Helper()
	l, err := c.try(signer, by, typ, body)
	if err != nil {
		c.t.Fatalf("NewLink %s: %v", typ, err)
	}
	c.push(l)
	return l
}

func (c *chain) try(signer kez.Signer, by kez.PublicKey, typ string, body []byte) (*Link, error) {
	return NewLink(signer, by, c.st, typ, body, time.Unix(c.ctime, 0))
}

// next signs a link after the chain's head without any rule check, for
// links that break rules.
func (c *chain) next(signer kez.Signer, by kez.PublicKey, typ string, body []byte) []byte {
	head := c.st.head
	return rawLink(c.t, signer, testGroup, c.st.seqno+1, &head, c.ctime, by, typ, body)
}

// rawLink assembles and signs a link without any check.
func rawLink(t testing.TB, signer kez.Signer, group string, seqno uint64, prev *[32]byte, ctime int64, by kez.PublicKey, typ string, body []byte) []byte {
	t.Helper()
	head := appendHead(nil, group, seqno, prev, ctime, by, signer.PublicKey(), typ, body)
	sig, err := signer.Sign(kez.ContextGroupLink, append(bytes.Clone(head), '}'))
	if err != nil {
		t.Fatal(err)
	}
	return appendSig(head, sig)
}

// allDevices accepts every device: for chains whose device rule a test
// does not exercise.
func allDevices(context.Context, kez.PublicKey, kez.PublicKey, time.Time) error { return nil }

// replaceOnce replaces the first old with new in a copy of b.
func replaceOnce(t testing.TB, b []byte, old, new string) []byte {
	t.Helper()
	if !bytes.Contains(b, []byte(old)) {
		t.Fatalf("%q not in %s", old, b)
	}
	return bytes.Replace(bytes.Clone(b), []byte(old), []byte(new), 1)
}

// resign replaces old with new in a link and signs it again, so only the
// edit is wrong.
func resign(t testing.TB, signer kez.Signer, b []byte, old, new string) []byte {
	t.Helper()
	e := replaceOnce(t, b, old, new)
	i := bytes.LastIndex(e, []byte(`,"sig":"`))
	sig, err := signer.Sign(kez.ContextGroupLink, append(bytes.Clone(e[:i]), '}'))
	if err != nil {
		t.Fatal(err)
	}
	return appendSig(e[:i:i], sig)
}

func members(ks ...*kez.Identity) []NewMember {
	out := make([]NewMember, len(ks))
	names := map[byte]string{1: "alice", 2: "bob", 3: "carol", 4: "dave", 5: "mal"}
	for i, k := range ks {
		out[i] = NewMember{Key: k.PublicKey(), Handle: handleOf(names[k.Seed()[0]]), Role: RoleMember}
	}
	return out
}

func keysOf(ms []Member) string {
	var b strings.Builder
	for _, m := range ms {
		b.WriteString(m.Key.String()[:6] + ":" + string(m.Role) + " ")
	}
	return b.String()
}
