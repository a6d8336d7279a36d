package files_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/files/format"
	"github.com/kez-lat/kez-chat/files/internal/signal"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/natsconn"
	libp2ppeer "github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/nats-io/nats.go"
)

// holdersStack is alice serving a public file (and a private one to
// bob), with a NATS login of mallory's to publish whatever she likes and
// one of bob's to ask for holders.
type holdersStack struct {
	st             *stacktest.Stack
	alice          *peer
	pub, priv      *files.SharedFile
	mallory, bob   *stacktest.User
	mnc, bnc       *nats.Conn
	pubSrc, pubDst string
	now            func() time.Time // alice's clock; nil: time.Now
}

func login(t testing.TB, st *stacktest.Stack, id *kez.Identity) *nats.Conn {
	t.Helper()
	nc, err := natsconn.Connect(context.Background(), st.NATSURL, id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func startHolders(t *testing.T) *holdersStack {
	t.Helper()
	st := stacktest.Start(t, stacktest.Options{})
	h := &holdersStack{st: st, alice: newPeer(t, st, "alice"), mallory: st.NewUser(t, "mallory"), bob: st.NewUser(t, "bob")}
	ctx := context.Background()
	dir := t.TempDir()
	h.pubSrc = filepath.Join(dir, "pub.bin")
	writeRandom(t, h.pubSrc, 3<<20+5, 7) // 13 chunks
	var err error
	if h.pub, err = h.alice.Share(ctx, h.pubSrc); err != nil {
		t.Fatal(err)
	}
	priv := filepath.Join(dir, "priv.bin")
	writeRandom(t, priv, 1000, 8)
	if h.priv, err = h.alice.Share(ctx, priv, files.To("bob")); err != nil {
		t.Fatal(err)
	}
	noErr(t, h.alice.StartServing(ctx))
	h.mnc, h.bnc = login(t, st, h.mallory.Identity), login(t, st, h.bob.Identity)
	return h
}

// fetchWhole makes a node with id fetch blob c whole from alice's node,
// directly (no signalling), so that alice's node sent id the last chunk.
func (h *holdersStack) fetchWhole(t *testing.T, id *kez.Identity, c cid.Cid) {
	t.Helper()
	n, err := files.NewNode(files.NodeConfig{Identity: id, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if err := n.Fetch(context.Background(), h.aliceInfo(), c, filepath.Join(t.TempDir(), "x")); err != nil {
		t.Fatal(err)
	}
}

func (h *holdersStack) aliceInfo() libp2ppeer.AddrInfo {
	return libp2ppeer.AddrInfo{ID: h.alice.DeviceKey().PeerID(), Addrs: h.alice.Addrs()}
}

// have signs a have by id for blob c at time at, with addrs.
func (h *holdersStack) have(t *testing.T, id *kez.Identity, c cid.Cid, at time.Time, addrs ...ma.Multiaddr) []byte {
	t.Helper()
	if len(addrs) == 0 {
		addrs = []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/9")}
	}
	b, err := signal.SignHave(id, &signal.Have{Owner: h.alice.DeviceKey(), Holder: id.PublicKey(), Time: at, CID: c, Addrs: addrs})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// publish sends b to alice's signalling subject from mallory's login.
func (h *holdersStack) publish(t *testing.T, b []byte) {
	t.Helper()
	if err := h.mnc.Publish(signal.SignalSubjectPrefix+h.alice.DeviceKey().String(), b); err != nil {
		t.Fatal(err)
	}
}

// ask sends bob's holders request for c to alice, raw, and returns the
// answer's bytes. Mallory's messages published before it are handled
// before it: one subscription handles its messages in order, and the
// flush makes the broker route them first.
func (h *holdersStack) ask(t *testing.T, c cid.Cid) []byte {
	t.Helper()
	noErr(t, h.mnc.Flush())
	now := time.Now
	if h.now != nil {
		now = h.now
	}
	req := signal.HoldersRequest{Owner: h.alice.DeviceKey(), Requester: h.bob.Key, Time: now(), CID: c}
	b, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	m, err := h.bnc.Request(signal.SignalSubjectPrefix+h.alice.DeviceKey().String(), b, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return m.Data
}

// holders returns the holders in alice's answer for c.
func (h *holdersStack) holders(t *testing.T, c cid.Cid) []kez.PublicKey {
	t.Helper()
	a, err := signal.ParseHoldersAnswer(h.ask(t, c))
	if err != nil {
		t.Fatal(err)
	}
	var out []kez.PublicKey
	for _, r := range a.Records {
		out = append(out, r.Holder)
	}
	return out
}

// The owner keeps a have only from a key its node sent the whole blob
// to, for a public file of its own, fresh, signed by the holder, and
// newer than the one it keeps from that holder; every refusal is counted.
func TestOwnerDropsBadHaves(t *testing.T) {
	h := startHolders(t)
	carol := testKey(t, 0x30)
	h.fetchWhole(t, carol, h.pub.CID)
	now := time.Now()

	// mallory never fetched the file.
	h.publish(t, h.have(t, h.mallory.Identity, h.pub.CID, now))
	// A private CID and an unknown one, from a key that fetched the file.
	h.publish(t, h.have(t, carol, h.priv.CID, now))
	h.publish(t, h.have(t, carol, unknownCID(t), now))
	// Forged: carol's key in the holder field, mallory's signature.
	forged := h.have(t, h.mallory.Identity, h.pub.CID, now)
	ck := carol.PublicKey()
	copy(forged[38:70], ck[:])
	h.publish(t, forged)
	// Stale and future.
	h.publish(t, h.have(t, carol, h.pub.CID, now.Add(-6*time.Minute)))
	h.publish(t, h.have(t, carol, h.pub.CID, now.Add(6*time.Minute)))
	// For another owner's device, and junk of each kind.
	other, err := signal.SignHave(carol, &signal.Have{Owner: h.bob.Key, Holder: carol.PublicKey(), Time: now, CID: h.pub.CID, Addrs: []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/9")}})
	noErr(t, err)
	h.publish(t, other)
	h.publish(t, []byte("kezp\x01\x03junk"))
	if got := h.holders(t, h.pub.CID); len(got) != 0 {
		t.Fatalf("holders after bad haves: %v", got)
	}

	// The genuine have is kept; the same bytes again, or an older one,
	// are replays.
	good := h.have(t, carol, h.pub.CID, now)
	h.publish(t, good)
	h.publish(t, good)
	h.publish(t, h.have(t, carol, h.pub.CID, now.Add(-time.Second)))
	if got := h.holders(t, h.pub.CID); !slices.Equal(got, []kez.PublicKey{carol.PublicKey()}) {
		t.Fatalf("holders: %v", got)
	}
	// Nothing for the private file, whatever was sent.
	if got := h.holders(t, h.priv.CID); len(got) != 0 {
		t.Fatalf("holders of the private file: %v", got)
	}
	s := h.alice.Stats().Holders
	want := files.HolderStats{Kept: 1, Invalid: 5, NotPublic: 2, NotFetched: 1, Replayed: 2, Answers: 3}
	if s != want {
		t.Fatalf("holder stats %+v, want %+v", s, want)
	}
}

// A flood of haves from many keys that all fetched the file keeps the 8
// newest, and the answer, with 8 records of 16 long addresses each, stays
// within the size limit.
func TestOwnerHoldersFlood(t *testing.T) {
	h := startHolders(t)
	var long []ma.Multiaddr
	for i := range signal.MaxHaveAddrs {
		a := ma.StringCast(fmt.Sprintf("/dns4/%s%02d.example/tcp/4001", bytes.Repeat([]byte("a"), 100), i))
		long = append(long, a)
	}
	const n = 12
	now := time.Now()
	var newest []kez.PublicKey
	for i := range n {
		id := testKey(t, byte(0x40+i))
		h.fetchWhole(t, id, h.pub.CID)
		h.publish(t, h.have(t, id, h.pub.CID, now.Add(time.Duration(i)*time.Second-time.Minute), long...))
		newest = append([]kez.PublicKey{id.PublicKey()}, newest...)
	}
	// An old one from one more key comes last: it is the oldest, and goes.
	late := testKey(t, 0x60)
	h.fetchWhole(t, late, h.pub.CID)
	h.publish(t, h.have(t, late, h.pub.CID, now.Add(-2*time.Minute), long...))

	b := h.ask(t, h.pub.CID)
	if len(b) > signal.MaxHoldersAnswerSize {
		t.Fatalf("an answer of %d bytes, more than %d", len(b), signal.MaxHoldersAnswerSize)
	}
	a, err := signal.ParseHoldersAnswer(b)
	noErr(t, err)
	var got []kez.PublicKey
	for _, r := range a.Records {
		got = append(got, r.Holder)
	}
	if !slices.Equal(got, newest[:signal.MaxHolders]) {
		t.Fatalf("kept %v, want the 8 newest %v", got, newest[:signal.MaxHolders])
	}
	if s := h.alice.Stats().Holders; s.Kept != n || s.Evicted != n-signal.MaxHolders+1 {
		t.Fatalf("holder stats %+v", s)
	}
}

// testKey returns a deterministic identity that is no stack user.
func testKey(t testing.TB, i byte) *kez.Identity {
	t.Helper()
	id, err := kez.FromSeed(bytes.Repeat([]byte{i}, 64))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// startClocked starts alice with holder limits lim on a clock the test
// moves (offset from base); she neither shares nor serves yet.
func startClocked(t *testing.T, lim files.HolderLimits) (h *holdersStack, offset *atomic.Int64, base time.Time) {
	t.Helper()
	st := stacktest.Start(t, stacktest.Options{})
	u := st.NewUser(t, "alice")
	base, offset = time.Now(), new(atomic.Int64)
	clock := func() time.Time { return base.Add(time.Duration(offset.Load())) }
	alice := openWith(t, st, u, client.Config{Identity: u.Identity, Home: u.Home, Clock: clock}, func(c *files.Config) {
		c.Holders = lim
	})
	return &holdersStack{st: st, alice: alice, mallory: st.NewUser(t, "mallory"), bob: st.NewUser(t, "bob"), now: clock}, offset, base
}

// The limits are the owner's Config: one holder per blob and one blob
// here, and the newest wins; a have lives for Life on the owner's clock.
func TestOwnerHolderLimits(t *testing.T) {
	h, offset, base := startClocked(t, files.HolderLimits{PerBlob: 1, Blobs: 1, Life: 10 * time.Minute})
	alice := h.alice
	var pubs []*files.SharedFile
	for i := range 2 {
		src := filepath.Join(t.TempDir(), fmt.Sprint("f", i))
		writeRandom(t, src, 10, uint64(i))
		sf, err := alice.Share(context.Background(), src)
		noErr(t, err)
		pubs = append(pubs, sf)
	}
	h.pub = pubs[0]
	noErr(t, alice.StartServing(context.Background()))
	h.mnc, h.bnc = login(t, h.st, h.mallory.Identity), login(t, h.st, h.bob.Identity)
	c1, c2 := testKey(t, 1), testKey(t, 2)
	for i, id := range []*kez.Identity{c1, c2} {
		h.fetchWhole(t, id, h.pub.CID)
		h.publish(t, h.have(t, id, h.pub.CID, base.Add(time.Duration(i-2)*time.Minute)))
	}
	if got := h.holders(t, h.pub.CID); !slices.Equal(got, []kez.PublicKey{c2.PublicKey()}) {
		t.Fatalf("holders %v, want only the newest", got)
	}
	// A second blob: over the limit of one.
	h.fetchWhole(t, c1, pubs[1].CID)
	h.publish(t, h.have(t, c1, pubs[1].CID, base))
	if got := h.holders(t, pubs[1].CID); len(got) != 0 {
		t.Fatalf("holders of a second blob: %v", got)
	}
	if s := alice.Stats().Holders; s.Kept != 2 || s.Evicted != 1 || s.Full != 1 {
		t.Fatalf("holder stats %+v", s)
	}
	// 10 minutes after its time, c2's have is gone.
	offset.Store(int64(9*time.Minute - time.Second))
	if got := h.holders(t, h.pub.CID); len(got) != 1 {
		t.Fatalf("holders before the have's life ends: %v", got)
	}
	offset.Store(int64(9*time.Minute + time.Second))
	if got := h.holders(t, h.pub.CID); len(got) != 0 {
		t.Fatalf("holders after the have's life: %v", got)
	}
}

// A holder whose have is kept refreshes it without the served-pairs
// check: that memory forgets (after 24 hours, or pushed out by strangers
// asking for the last chunk under fresh keys), the kept have proves the
// holder fetched the file. A key whose pair is forgotten and whose have
// is not kept is dropped, and so is a refresh once the kept have expired.
func TestOwnerKeepsRefreshedHave(t *testing.T) {
	h, offset, base := startClocked(t, files.HolderLimits{Life: 48 * time.Hour})
	alice, clock := h.alice, h.now
	src := filepath.Join(t.TempDir(), "f")
	writeRandom(t, src, 3<<20, 9)
	var err error
	h.pub, err = alice.Share(context.Background(), src)
	noErr(t, err)
	noErr(t, alice.StartServing(context.Background()))
	h.mnc, h.bnc = login(t, h.st, h.mallory.Identity), login(t, h.st, h.bob.Identity)
	carol, dave := testKey(t, 0x31), testKey(t, 0x32)
	h.fetchWhole(t, carol, h.pub.CID)
	h.fetchWhole(t, dave, h.pub.CID)
	h.publish(t, h.have(t, carol, h.pub.CID, base))

	if got := h.holders(t, h.pub.CID); len(got) != 1 { // handled before the clock moves
		t.Fatalf("holders %v", got)
	}
	offset.Store(int64(25 * time.Hour)) // neither pair is remembered now
	h.publish(t, h.have(t, carol, h.pub.CID, clock()))
	h.publish(t, h.have(t, dave, h.pub.CID, clock()))
	if got := h.holders(t, h.pub.CID); !slices.Equal(got, []kez.PublicKey{carol.PublicKey()}) {
		t.Fatalf("holders %v, want carol's refreshed have alone", got)
	}
	if s := alice.Stats().Holders; s.Kept != 2 || s.NotFetched != 1 {
		t.Fatalf("holder stats %+v, want carol's two haves kept and dave's dropped", s)
	}

	offset.Store(int64(74 * time.Hour)) // carol's have, of hour 25, lived 48 hours
	h.publish(t, h.have(t, carol, h.pub.CID, clock()))
	if got := h.holders(t, h.pub.CID); len(got) != 0 {
		t.Fatalf("holders %v after the kept have expired", got)
	}
	if s := alice.Stats().Holders; s.Kept != 2 || s.NotFetched != 2 {
		t.Fatalf("holder stats %+v, want the late refresh dropped", s)
	}
}

func noErr(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// unknownCID is the CID of a blob nobody shares.
func unknownCID(t testing.TB) cid.Cid {
	t.Helper()
	tr, err := format.BuildTree(bytes.NewReader([]byte("unknown")))
	noErr(t, err)
	return tr.CID()
}
