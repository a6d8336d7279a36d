package chat

import (
	"bytes"
	"compress/flate"
	"crypto/rand"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
)

// offline makes a test client that is not logged in to NATS.
func offline(c *Config) { c.Client.NATSURL = "" }

// historyBodies returns the bodies of the chunks c would send.
func historyBodies(t testing.TB, c *testClient) ([][]byte, HistoryStats) {
	t.Helper()
	var stats HistoryStats
	var bodies [][]byte
	err := c.historyChunks(testCtx(t), &stats, func(b []byte) error {
		bodies = append(bodies, b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return bodies, stats
}

// dump lists c's contacts, chains and messages as text, to compare two
// databases.
func dump(t testing.TB, c *testClient, withContactTimes bool) string {
	t.Helper()
	var b strings.Builder
	q := `SELECT handle, key, hex(enc_key), generation, sig_server, pin_seqno, pin_head, COALESCE(verified_at, 0), flag, flag_detail, flag_key, COALESCE(flagged_at, 0), added_at FROM contacts ORDER BY handle`
	rows, err := c.db.db.Query(q)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var f [13]any
		var s [13]string
		for i := range f {
			f[i] = &s[i]
		}
		if err := rows.Scan(f[:]...); err != nil {
			t.Fatal(err)
		}
		if !withContactTimes {
			s[12] = ""
		}
		fmt.Fprintln(&b, "contact", strings.Join(s[:], " "))
	}
	rows.Close()
	rows, err = c.db.db.Query(`SELECT key, seqno, hex(link) FROM chain_links ORDER BY key, seqno`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var k, l string
		var n int
		rows.Scan(&k, &n, &l)
		fmt.Fprintln(&b, "link", k, n, l)
	}
	rows.Close()
	rows, err = c.db.db.Query(`SELECT hex(id), incoming, peer_key, peer_handle, from_key, to_key, sent_at, received_at, kind, hex(ref), hex(body), trust, state, read, COALESCE(delivered_at, 0) FROM messages ORDER BY from_key, id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var f [15]any
		var s [15]string
		for i := range f {
			f[i] = &s[i]
		}
		if err := rows.Scan(f[:]...); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintln(&b, "message", strings.Join(s[:], " "))
	}
	rows.Close()
	return b.String()
}

// historyFixture: alice (online) with contacts bob (verified, messages
// both ways, one read, one delivered) and carol, and an empty offline
// client of alice's person in another state folder.
func historyFixture(t *testing.T) (st *stacktest.Stack, alice, bob, fresh *testClient) {
	t.Helper()
	st = stacktest.Start(t, stacktest.Options{})
	au, bu, cu := st.NewUser(t, "alice"), st.NewUser(t, "bob"), st.NewUser(t, "carol")
	alice, bob = openClient(t, st, au), openClient(t, st, bu)
	mustAdd(t, alice, "bob")
	mustAdd(t, alice, "carol")
	mustAdd(t, bob, "alice")
	if _, err := alice.VerifyContact(testCtx(t), "bob", bu.Key.Fingerprint()); err != nil {
		t.Fatal(err)
	}
	mustSend(t, alice, "bob", "hello bob")
	receiveN(t, bob, 1) // bob's receipt waits for alice with his messages
	mustSend(t, bob, "alice", "hi alice")
	mustSend(t, bob, "alice", "how are you? ✓")
	receiveN(t, alice, 2)
	mustInbox(t, alice, false) // read
	mustSend(t, bob, "alice", "unread one")
	receiveN(t, alice, 1)
	_ = cu
	fresh = openClient(t, st, au, offline)
	return st, alice, bob, fresh
}

func TestHistoryImport(t *testing.T) {
	_, alice, _, fresh := historyFixture(t)
	ctx := testCtx(t)
	bodies, stats := historyBodies(t, alice)
	if stats.Contacts != 2 || stats.Messages != 4 || len(bodies) != 1 {
		t.Fatalf("stats %+v, %d bodies", stats, len(bodies))
	}
	device := stacktest.Identity("alice-laptop").PublicKey()
	res, err := fresh.importHistory(ctx, device, bodies[0])
	if err != nil {
		t.Fatal(err)
	}
	if res.Contacts != 2 || res.Messages != 4 || !res.LastOfTransfer || res.Index != 0 {
		t.Fatalf("import: %+v", res)
	}
	if got, want := dump(t, fresh, true), dump(t, alice, true); got != want {
		t.Fatalf("the imported database differs:\n%s\nwant\n%s", got, want)
	}
	bob, err := fresh.Contact(ctx, "bob")
	if err != nil || !bob.Verified() || bob.Pin.Seqno == 0 && bob.Pin.Head.String() == "" {
		t.Fatalf("bob on the new device: %+v %v", bob, err)
	}
	// The cached pinned state serves a send's checks: the chain is there.
	if cs, _ := fresh.contact(ctx, "carol"); cs == nil {
		t.Fatal("carol is not cached")
	} else if _, err := fresh.pinnedState(ctx, cs); err != nil {
		t.Fatal(err)
	}
	sent, err := fresh.History(ctx, "bob", 0)
	if err != nil || len(sent) != 4 || sent[0].Text() != "hello bob" || sent[0].DeliveredAt.IsZero() || sent[0].Incoming {
		t.Fatalf("the conversation on the new device: %v %v", texts(sent), err)
	}
	un, err := fresh.Unread(ctx)
	if err != nil || len(un) != 1 || un[0].Text() != "unread one" {
		t.Fatalf("unread on the new device: %v %v", texts(un), err)
	}
	evs, _ := fresh.ContactEvents(ctx, "carol")
	if len(evs) != 1 || evs[0].Event != "synced" || !strings.Contains(evs[0].Detail, device.String()) {
		t.Fatalf("carol's events: %+v", evs)
	}

	// The same chunk again changes nothing.
	before := dump(t, fresh, true)
	res, err = fresh.importHistory(ctx, device, bodies[0])
	if err != nil || res.Contacts != 0 || res.Messages != 0 {
		t.Fatalf("second import: %+v %v", res, err)
	}
	if after := dump(t, fresh, true); after != before {
		t.Fatalf("a chunk applied twice changed the database:\n%s\nthen\n%s", before, after)
	}
	if evs2, _ := fresh.ContactEvents(ctx, "carol"); len(evs2) != 1 {
		t.Fatalf("a second import added events: %+v", evs2)
	}
}

// TestHistoryImportKeepsLocal: what the receiving device decided wins; it
// only gains a read mark and a verification it lacked.
func TestHistoryImportKeepsLocal(t *testing.T) {
	_, alice, _, fresh := historyFixture(t)
	ctx := testCtx(t)
	// fresh pins bob itself (not verified) and has read nothing.
	mustAdd(t, fresh, "bob")
	bodies, _ := historyBodies(t, alice)
	if _, err := fresh.importHistory(ctx, kez.PublicKey{1}, bodies[0]); err != nil {
		t.Fatal(err)
	}
	bob, _ := fresh.Contact(ctx, "bob")
	if !bob.Verified() {
		t.Fatal("the verification made on the other device was not taken")
	}
	evs, _ := fresh.ContactEvents(ctx, "bob")
	if evs[0].Event != "added" || evs[len(evs)-1].Event != "verified" {
		t.Fatalf("bob's events: %+v", evs)
	}
}

func TestHistoryRefusesMalformed(t *testing.T) {
	st, alice, _, fresh := historyFixture(t)
	ctx := testCtx(t)
	bodies, _ := historyBodies(t, alice)
	payload := inflate(t, bodies[0])
	empty := dump(t, fresh, true)
	bad := map[string][]byte{
		"empty":           {},
		"other magic":     append([]byte("KZH2\x00"), payload...),
		"bad compression": append([]byte("KZH1\x07"), payload...),
		"damaged deflate": append([]byte("KZH1\x01"), 0xff, 0xff, 0xff),
		"truncated":       append([]byte("KZH1\x00"), payload[:len(payload)-1]...),
		"trailing byte":   append(append([]byte("KZH1\x00"), payload...), 0),
		"count too big":   withCount(payload, 7),
		"count too small": withCount(payload, 5),
	}
	// A tampered link (the last byte of bob's chain's signature).
	i := bytes.Index(payload, []byte(`"sig":"`))
	if i < 0 {
		t.Fatal("no link in the payload")
	}
	tampered := bytes.Clone(payload)
	tampered[i+10] ^= 1
	bad["tampered link"] = append([]byte("KZH1\x00"), tampered...)
	// A few KiB that inflate past the 1 MiB bound: refused at the bound,
	// not read to the end.
	var bomb bytes.Buffer
	fw, err := flate.NewWriter(&bomb, flate.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	fw.Write(make([]byte, 16*maxHistoryPayload))
	fw.Close()
	if bomb.Len() > MaxBodySize {
		t.Fatalf("the bomb is %d bytes, over a body's %d", bomb.Len(), MaxBodySize)
	}
	bad["inflates too far"] = append([]byte("KZH1\x01"), bomb.Bytes()...)
	for name, b := range bad {
		if _, err := fresh.importHistory(ctx, kez.PublicKey{1}, b); !errors.Is(err, ErrBadHistoryChunk) {
			t.Errorf("%s: %v", name, err)
		} else if name == "inflates too far" && !strings.Contains(err.Error(), "once inflated") {
			t.Errorf("%s: refused for another reason: %v", name, err)
		}
	}
	// Another person's history: alice's chunk applied by bob's device is
	// refused whole (its messages are neither from nor to bob).
	bobFresh := openClient(t, st, st.NewUser(t, "bob"), offline)
	if _, err := bobFresh.importHistory(ctx, kez.PublicKey{1}, bodies[0]); !errors.Is(err, ErrBadHistoryChunk) {
		t.Errorf("alice's history on bob's device: %v", err)
	}
	if n := countRows(t, bobFresh, `SELECT COUNT(*) FROM messages`); n != 0 {
		t.Errorf("bob's device stored %d messages of a refused chunk", n)
	}
	if got := dump(t, fresh, true); got != empty {
		t.Fatalf("a refused chunk changed the database:\n%s", got)
	}
}

// inflate returns the payload of a chunk body.
func inflate(t testing.TB, body []byte) []byte {
	t.Helper()
	if body[4] == compressNone {
		return body[5:]
	}
	p, err := io.ReadAll(flate.NewReader(bytes.NewReader(body[5:])))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// withCount returns an uncompressed body of payload with its item count
// set to n.
func withCount(payload []byte, n uint32) []byte {
	p := bytes.Clone(payload)
	binary.BigEndian.PutUint32(p[21:], n)
	return append([]byte("KZH1\x00"), p...)
}

// TestHistoryChunking packs 10,000 messages, some large, into bodies of
// at most MaxBodySize bytes; every item arrives exactly once, in order,
// and one that fits in no chunk is counted, not sent.
func TestHistoryChunking(t *testing.T) {
	me, peer := stacktest.Identity("alice").PublicKey(), stacktest.Identity("bob").PublicKey()
	var items []*historyItem
	var want []MessageID
	for i := range 10000 {
		e := &Entry{ID: NewMessageID(), From: peer, To: me, Incoming: true, Read: true, SentAt: t0.Add(time.Duration(i) * time.Second),
			ReceivedAt: t0.Add(time.Duration(i) * time.Second), Kind: KindText, Body: []byte(fmt.Sprintf("message number %d of the history", i)), Trust: TrustTrusted}
		switch i % 1000 {
		case 10:
			e.Body = bytes.Repeat([]byte("compressible "), 3500) // 45,500 bytes, deflates well
		case 20:
			e.Body = make([]byte, MaxBodySize) // random, fits in no chunk
			rand.Read(e.Body)
			e.Kind = "file.offer"
		}
		w := &historyWriter{}
		w.message(e)
		items = append(items, &historyItem{enc: w.b})
		if i%1000 != 20 {
			want = append(want, e.ID)
		}
	}
	var stats HistoryStats
	items = dropOversize(items, &stats)
	if stats.MessagesSkipped != 10 {
		t.Fatalf("skipped %d", stats.MessagesSkipped)
	}
	var got []MessageID
	var total int
	var transfer [16]byte
	for index := uint32(0); len(items) > 0; index++ {
		n, body := packHistory(items, transfer, index)
		items = items[n:]
		if len(body) > MaxBodySize {
			t.Fatalf("chunk %d is %d bytes", index, len(body))
		}
		total += len(body)
		ch, err := decodeHistoryBody(body, me)
		if err != nil {
			t.Fatal(err)
		}
		if ch.Index != index || ch.Last != (len(items) == 0) {
			t.Fatalf("chunk %d says index %d, last %v", index, ch.Index, ch.Last)
		}
		for _, e := range ch.Messages {
			got = append(got, e.ID)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("%d messages came out of the chunks, want %d in order", len(got), len(want))
	}
	t.Logf("%d messages in %d bytes of chunks", len(got), total)
}

// linkDevice links a new device to u's person (newDevice) and opens a
// client of it.
func linkDevice(t *testing.T, st *stacktest.Stack, u *stacktest.User, name string) *testClient {
	t.Helper()
	return openDevice(t, st, u, st.AddDevice(t, u, name), name)
}

// seedHistory stores n messages between c and peer in c's history, as
// if exchanged (every tenth sent by c, the last ten unread).
func seedHistory(t *testing.T, c *testClient, peer kez.PublicKey, handle string, n int) {
	t.Helper()
	me := c.Key()
	err := c.db.write(testCtx(t), func(tx *sql.Tx) error {
		for i := range n {
			at := t0.Add(time.Duration(i) * time.Second)
			e := &Entry{ID: NewMessageID(), Incoming: true, Peer: peer, PeerHandle: handle, From: peer, To: me, SentAt: at, ReceivedAt: at,
				Kind: KindText, Body: []byte(fmt.Sprintf("message %d: the quick brown fox jumps over the lazy dog", i)), Trust: TrustTrusted, Read: i < n-10}
			if i%10 == 0 {
				e.Incoming, e.From, e.To, e.State, e.Read = false, me, peer, StateSent, true
			}
			if _, err := c.db.insertEntry(tx, e); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestHistoryTransfer links a device to alice and sends it 10,000
// messages of history over the stack: the new device ends with the same
// contacts and messages, and the transfer time is logged.
func TestHistoryTransfer(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	alice, bob := openClient(t, st, au), openClient(t, st, bu)
	mustAdd(t, alice, "bob")
	mustAdd(t, bob, "alice")
	// 10,000 messages as the issue asks; under the race detector (CI),
	// whose SQLite is many times slower, 2,000 (kez-bench's devices group
	// measures 10,000).
	n := 10000
	if raceEnabled {
		n = 2000
	}
	seedHistory(t, alice, bu.Key, bu.Handle.String(), n)
	laptop := linkDevice(t, st, au, "laptop")
	ctx := testCtx(t)

	// Not to a key that is no device of alice's, nor to itself.
	if _, err := alice.SendHistory(ctx, bu.Key, HistoryOptions{}); !errors.Is(err, ErrNotOwnDevice) {
		t.Fatalf("history to bob: %v", err)
	}
	if _, err := alice.SendHistory(ctx, alice.DeviceKey(), HistoryOptions{}); !errors.Is(err, ErrNotOwnDevice) {
		t.Fatalf("history to itself: %v", err)
	}

	start := time.Now()
	stats, err := alice.SendHistory(ctx, laptop.DeviceKey(), HistoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sent := time.Since(start)
	if stats.Messages != n || stats.Contacts != 1 || stats.MessagesSkipped+stats.ContactsSkipped != 0 {
		t.Fatalf("stats %+v", stats)
	}
	receiveUntilWithin(t, laptop, "the history", 2*time.Minute, func(int) bool {
		return countRows(t, laptop, `SELECT COUNT(*) FROM messages`) == n
	})
	applied := time.Since(start)
	t.Logf("history of %d messages: %d chunks, %d bytes, %d waits; sent in %s, applied on the new device %s after the start",
		n, stats.Chunks, stats.Bytes, stats.Waits, sent.Round(time.Millisecond), applied.Round(time.Millisecond))
	if got, want := dump(t, laptop, true), dump(t, alice, true); got != want {
		t.Fatalf("the new device's history differs from the primary's")
	}
	if ct, err := laptop.Contact(ctx, "bob"); err != nil || ct.Key != bu.Key {
		t.Fatalf("bob on the laptop: %v", err)
	}

	// Sending it again changes nothing.
	before := dump(t, laptop, true)
	if _, err := alice.SendHistory(ctx, laptop.DeviceKey(), HistoryOptions{}); err != nil {
		t.Fatal(err)
	}
	mustSend(t, alice, "bob", "marker") // its sent copy follows the chunks
	receiveUntil(t, laptop, "the sent copy", func(int) bool {
		return countRows(t, laptop, `SELECT COUNT(*) FROM messages`) == n+1
	})
	if after := dump(t, laptop, true); !strings.HasPrefix(after, before[:strings.Index(before, "message ")]) || strings.Count(after, "\nmessage ") != n+1 {
		t.Fatal("the history sent twice changed the new device's history")
	}
}

// TestHistoryOnlyFromOwnDevices: a sync-history chunk that bob's device
// seals to alice's device is refused: nothing of it is stored.
func TestHistoryOnlyFromOwnDevices(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	alice, bob := openClient(t, st, au), openClient(t, st, bu)
	mustAdd(t, alice, "bob")
	laptop := linkDevice(t, st, au, "laptop")
	mustAdd(t, bob, "alice") // pins alice's chain with the laptop
	ctx := testCtx(t)
	// bob builds a chunk that would plant a message "from alice" on her
	// laptop (his own history, written as alice's).
	w := &historyWriter{}
	w.message(&Entry{ID: NewMessageID(), From: au.Key, To: bu.Key, SentAt: t0, ReceivedAt: t0, Kind: KindText, Body: []byte("planted"), Trust: TrustTrusted, State: StateSent, Read: true})
	body := encodeHistoryBody(chunkPayload([]*historyItem{{enc: w.b}}, [16]byte{}, 0, true))
	p, err := bob.publishIn(ctx, []target{{rcpt: Recipient{Key: laptop.DeviceKey()}, person: au.Key}}, Message{Kind: KindSyncHistory, Body: body}, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	mustSend(t, bob, "alice", "after the chunk")
	receiveUntil(t, laptop, "bob's message", func(int) bool {
		return countRows(t, laptop, `SELECT COUNT(*) FROM messages WHERE incoming = 1`) == 1
	})
	if n := countRows(t, laptop, `SELECT COUNT(*) FROM messages WHERE body = ?`, []byte("planted")); n != 0 {
		t.Fatal("a history chunk from another person's device was applied")
	}
}

// TestHistorySpecVector checks the vector of docs/spec/chat.md §9.3.
func TestHistorySpecVector(t *testing.T) {
	spec, err := os.ReadFile("../docs/spec/chat.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)Its body without compression:\n\n```\n(.*?)```").FindSubmatch(spec)
	if m == nil {
		t.Fatal("no history vector in chat.md")
	}
	want, err := hex.DecodeString(strings.ReplaceAll(string(m[1]), "\n", ""))
	if err != nil {
		t.Fatal(err)
	}
	a, _ := kez.ParsePublicKey("UBEZRRVSGPSBY27Q4OUWJ2U276ERUCM7QPE5Y5BAWKI7BGJHDCPONM47")
	b, _ := kez.ParsePublicKey("UBVBZNUTHDTVHMOZSAYLL6QRMPIF2VSCE5XXKBYZLM267E6TX3JHCCAR")
	var id MessageID
	for i := range id {
		id[i] = byte(i)
	}
	at := time.UnixMilli(1767225600000)
	e := &Entry{ID: id, From: b, To: a, Incoming: true, Read: true, PeerHandle: "bob@kez.lat", SentAt: at, ReceivedAt: at.Add(time.Second), Kind: KindText, Body: []byte("hello"), Trust: TrustTrusted}
	w := &historyWriter{}
	w.message(e)
	transfer := [16]byte(bytes.Repeat([]byte{0xaa}, 16))
	p := chunkPayload([]*historyItem{{enc: w.b}}, transfer, 0, true)
	if got := append([]byte("KZH1\x00"), p...); !bytes.Equal(got, want) {
		t.Fatalf("chat.md shows\n%x\nthe code writes\n%x", want, got)
	}
	for _, body := range [][]byte{want, encodeHistoryBody(p)} {
		ch, err := decodeHistoryBody(body, a)
		if err != nil || len(ch.Messages) != 1 || !ch.Last || ch.Transfer != transfer || ch.Messages[0].Text() != "hello" || ch.Messages[0].Peer != b {
			t.Fatalf("the vector decodes to %+v, %v", ch, err)
		}
	}
}
