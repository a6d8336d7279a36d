package chat

// Forward secrecy and post-compromise security of sessions (format v2),
// shown end to end (issue 15): two real clients talk through a recording
// TCP proxy (tcprec) in front of the stack's nats-server, and an attacker
// who holds every envelope that crossed the wire is then given a party's
// device: a copy of its chat.db as it is on the disk while the client runs
// (the database file and its write-ahead log), and its 24 words. The
// attacker uses what package session exports, the stored forms
// docs/spec/session.md documents, and the words; nothing of the client.

import (
	"bytes"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/internal/testenv/tcprec"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/session"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// via points a client's NATS connection at the proxy.
func via(rec *tcprec.Proxy) clientOpt {
	return func(c *Config) { c.Client.NATSURL = "nats://" + rec.Addr() }
}

// startWiretap starts a recording proxy in front of the stack's NATS.
func startWiretap(t *testing.T, st *stacktest.Stack) *tcprec.Proxy {
	t.Helper()
	return tcprec.Start(t, strings.TrimPrefix(st.NATSURL, "nats://"))
}

// testClock is a clock a test sets.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

// wireEnv is a format v2 envelope that crossed the wire.
type wireEnv struct {
	env []byte
	h   session.Header
	// first is the place in the recording where it first crossed
	// complete (published or delivered).
	first int
}

// before reports whether e had crossed the wire by mark m.
func (e wireEnv) before(m tcprec.Mark) bool { return e.first < int(m) }

// recorded returns every distinct envelope in the NATS messages that
// crossed the proxy so far (publishes and deliveries), in the order they
// first crossed. Each must be format v2 with a well-formed header: new
// sessions send nothing else.
func recorded(t *testing.T, rec *tcprec.Proxy) []wireEnv {
	t.Helper()
	msgs, err := rec.NATSMessages()
	if err != nil {
		t.Fatal(err)
	}
	var out []wireEnv
	seen := map[string]bool{}
	for _, m := range msgs {
		if !bytes.HasPrefix(m.Payload, []byte(envelopeMagic)) || seen[string(m.Payload)] {
			continue
		}
		seen[string(m.Payload)] = true
		h, err := session.ParseHeader(m.Payload)
		if err != nil {
			t.Fatalf("%s %s carries a KEZM payload that is not a session envelope (%s): %v", m.Op, m.Subject, wireForm(m.Payload), err)
		}
		out = append(out, wireEnv{env: m.Payload, h: h, first: m.Seq})
	}
	if len(out) == 0 {
		t.Fatal("no envelope crossed the proxy")
	}
	return out
}

// talk sends texts from one client to the other, and waits until the
// recipient stored them and the sender holds the recipient's receipts:
// nothing of the exchange is left in flight.
func talk(t *testing.T, from, to *testClient, texts ...string) {
	t.Helper()
	for _, s := range texts {
		mustSend(t, from, to.user.Name, s)
	}
	receiveN(t, to, len(texts))
	allDelivered(t, from, to)
}

// allDelivered receives as c until every message c sent to peer has its
// receipt.
func allDelivered(t *testing.T, c, peer *testClient) {
	t.Helper()
	receiveUntil(t, c, "the receipts of "+peer.user.Name, func(int) bool {
		h, err := c.History(testCtx(t), peer.user.Name, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range h {
			if !e.Incoming && e.DeliveredAt.IsZero() {
				return false
			}
		}
		return true
	})
}

// loot is what an attacker took from a device.
type loot struct {
	id *kez.Identity // from the 24 words: every long-term key
	at time.Time     // the device's clock when it was taken
	// states and prekeys are the session states and private prekeys (in
	// their stored forms) found in the copy of chat.db: its tables, and
	// whatever the bytes of its files still hold (rows deleted or
	// overwritten, in free space or in the write-ahead log).
	states, prekeys [][]byte
	// carved counts the states and prekeys found only in the bytes.
	carved int
}

// steal copies c's chat.db and its write-ahead log, as they are on the
// disk while c runs, idle (every exchange finished, and the log scrubbed,
// as the client does once its writes pause), and takes its words.
func steal(t *testing.T, c *testClient, home string, at time.Time) *loot {
	t.Helper()
	waitScrubbed(t, home)
	dir := t.TempDir()
	var raw []byte
	for _, name := range []string{DBFileName, DBFileName + "-wal"} {
		b, err := os.ReadFile(filepath.Join(home, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		raw = append(raw, b...)
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	id, err := kez.FromMnemonic(stacktest.Words(c.user.Name))
	if err != nil {
		t.Fatal(err)
	}
	l := &loot{id: id, at: at}
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, DBFileName))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	column := func(q string) [][]byte {
		rows, err := db.Query(q)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out [][]byte
		for rows.Next() {
			var b []byte
			if err := rows.Scan(&b); err != nil {
				t.Fatal(err)
			}
			out = append(out, b)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	l.states, l.prekeys = column(`SELECT state FROM sessions`), column(`SELECT private FROM prekeys`)
	if len(l.states) == 0 || len(l.prekeys) == 0 {
		t.Fatalf("%s's chat.db holds %d sessions and %d prekeys", c.user.Name, len(l.states), len(l.prekeys))
	}
	states, prekeys := carve(raw)
	for _, s := range states {
		if !slices.ContainsFunc(l.states, func(b []byte) bool { return bytes.Equal(b, s) }) {
			l.states = append(l.states, s)
			l.carved++
		}
	}
	for _, k := range prekeys {
		if !slices.ContainsFunc(l.prekeys, func(b []byte) bool { return bytes.Equal(b, k) }) {
			l.prekeys = append(l.prekeys, k)
			l.carved++
		}
	}
	return l
}

// waitScrubbed waits until the write-ahead log of the chat.db in home is
// empty (or gone): the client scrubs it once its writes pause (at most
// scrubIdle after the last one, if nothing else is reading).
func waitScrubbed(t *testing.T, home string) {
	t.Helper()
	wal := filepath.Join(home, DBFileName+"-wal")
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := os.Stat(wal)
		if errors.Is(err, os.ErrNotExist) || err == nil && st.Size() == 0 {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the write-ahead log of %s still holds %d bytes", home, st.Size())
		}
		runtime.Gosched()
	}
}

// A value replaced, and one deleted, leave chat.db's files once the
// client's writes pause: the write-ahead log is scrubbed (truncated after
// a checkpoint) and secure_delete zeroes what the database file frees
// (without it, the file keeps earlier copies of the current value).
func TestStoreForgetsReplacedRows(t *testing.T) {
	home := t.TempDir()
	s, err := openStore(filepath.Join(home, DBFileName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.close() })
	ctx := testCtx(t)
	files := func() []byte {
		var b []byte
		for _, name := range []string{DBFileName, DBFileName + "-wal"} {
			f, err := os.ReadFile(filepath.Join(home, name))
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}
			b = append(b, f...)
		}
		return b
	}
	for _, v := range []string{"first-secret-7c1e", "second-secret-7c1e", "kept-value-7c1e"} {
		if err := s.setMeta(ctx, "secret", v); err != nil {
			t.Fatal(err)
		}
		if err := s.setMeta(ctx, "gone-"+v, v); err != nil {
			t.Fatal(err)
		}
		if err := s.write(ctx, func(tx *sql.Tx) error {
			_, err := tx.Exec(`DELETE FROM meta WHERE name = ?`, "gone-"+v)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	waitScrubbed(t, home)
	b := files()
	for _, gone := range []string{"first-secret-7c1e", "second-secret-7c1e"} {
		if bytes.Contains(b, []byte(gone)) {
			t.Errorf("%q is still in chat.db's files", gone)
		}
	}
	if n := bytes.Count(b, []byte("kept-value-7c1e")); n != 1 {
		t.Errorf("the current value is in the files %d times, want once", n)
	}
}

// Stored forms (docs/spec/session.md §11, and PrekeyPrivate.MarshalBinary).
const (
	stateFixedLen     = 308 // up to and including prefix_len
	stateSkippedLen   = 76
	prekeyPrivateLen  = 5 + 64 + session.PrekeyRecordSize
	prekeySeedsOffset = 5
)

// carve finds every session state ("KEZS", version 1) and private prekey
// ("KEZp", version 1) in b that the package parses, as a forensic tool
// finds records in a disk image.
func carve(b []byte) (states, prekeys [][]byte) {
	for off := 0; ; {
		i := bytes.Index(b[off:], []byte("KEZS\x01"))
		if i < 0 {
			break
		}
		off += i + 1
		if s := carveState(b[off-1:]); s != nil {
			states = append(states, s)
		}
	}
	for off := 0; ; {
		i := bytes.Index(b[off:], []byte("KEZp\x01"))
		if i < 0 {
			break
		}
		off += i + 1
		if k := b[off-1:]; len(k) >= prekeyPrivateLen {
			if _, err := session.ParsePrekeyPrivate(k[:prekeyPrivateLen]); err == nil {
				prekeys = append(prekeys, bytes.Clone(k[:prekeyPrivateLen]))
			}
		}
	}
	return states, prekeys
}

// carveState returns the session state that starts b, if b holds a whole
// one that parses.
func carveState(b []byte) []byte {
	if len(b) < stateFixedLen {
		return nil
	}
	n := stateFixedLen + int(binary.BigEndian.Uint16(b[306:]))
	if len(b) < n+2 {
		return nil
	}
	n += 2 + 32*int(binary.BigEndian.Uint16(b[n:]))
	if len(b) < n+2 {
		return nil
	}
	n += 2 + stateSkippedLen*int(binary.BigEndian.Uint16(b[n:]))
	if len(b) < n {
		return nil
	}
	if _, err := session.ParseSession(b[:n]); err != nil {
		return nil
	}
	return bytes.Clone(b[:n])
}

// mirror returns the session as the peer of st's owner would hold it, as
// far as the owner's sending chain goes: its receiving chain is the
// owner's sending chain (the same key, counter and ratchet key). Open
// takes only envelopes addressed to the state's owner; the mirror lets the
// attacker try the owner's state on the envelopes the owner sent. nil if
// st has no sending chain.
func mirror(t *testing.T, st []byte) []byte {
	t.Helper()
	const (
		offFlags, offMe, offPeer, offDHsPub, offDHr, offCKs, offCKr = 5, 6, 38, 134, 166, 230, 262
		offNs, offNr, offPN, offPrefixLen                           = 294, 298, 302, 306
		flagEstablished, flagCKs, flagCKr, flagDHr                  = 1 << 1, 1 << 2, 1 << 3, 1 << 4
	)
	if st[offFlags]&flagCKs == 0 {
		return nil
	}
	m := bytes.Clone(st[:stateFixedLen])
	m[offFlags] = flagEstablished | flagCKr | flagDHr // a responder: no handshake prefix
	copy(m[offMe:offMe+32], st[offPeer:offPeer+32])
	copy(m[offPeer:offPeer+32], st[offMe:offMe+32])
	copy(m[offDHr:offDHr+32], st[offDHsPub:offDHsPub+32])
	copy(m[offCKr:offCKr+32], st[offCKs:offCKs+32])
	clear(m[offCKs : offCKs+32])
	copy(m[offNr:offNr+4], st[offNs:offNs+4])
	clear(m[offNs : offNs+4])
	clear(m[offPN : offPN+4])
	clear(m[offPrefixLen : offPrefixLen+2])
	m = append(m, 0, 0, 0, 0) // no earlier ratchet keys, no skipped keys
	if _, err := session.ParseSession(m); err != nil {
		t.Fatalf("the mirror of a state does not parse: %v", err)
	}
	return m
}

// prekeysFor returns every private prekey the attacker can make for a
// handshake to prekey id: each stored one (its seeds, signed again under
// the handshake's ID with the identity's key, which the attacker holds),
// and those a broken implementation might have derived from the words
// (the identity's seed, its ed25519 key, its X25519 encryption keys).
func (l *loot) prekeysFor(t *testing.T, id uint32) []*session.PrekeyPrivate {
	t.Helper()
	var seeds [][]byte
	for _, k := range l.prekeys {
		seeds = append(seeds, k[prekeySeedsOffset:prekeySeedsOffset+64])
	}
	ed := l.id.Ed25519PrivateKey().Seed()
	seeds = append(seeds, l.id.Seed(), slices.Concat(ed, ed))
	for g := range uint32(4) {
		enc := l.id.EncryptionKey(g).Bytes()
		seeds = append(seeds, slices.Concat(enc, enc), slices.Concat(enc, ed), slices.Concat(ed, enc))
	}
	var out []*session.PrekeyPrivate
	for _, s := range seeds {
		if len(s) < 64 {
			continue
		}
		k, err := session.NewPrekey(bytes.NewReader(s[:64]), l.id, id, l.at, session.DefaultPrekeyLifetime)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, k)
	}
	return out
}

// read is the attacker at work on envs: every state it holds (and the
// mirror of each) is tried with Open on every envelope, every prekey it
// can make with Accept on every handshake to its victim, and the
// identity's encryption keys with format v1's OpenEnvelope. It follows the
// conversation: a state that opened an envelope is kept, as it is after,
// and tried on everything else, until nothing more opens. It returns what
// opened, by index in envs.
func (l *loot) read(t *testing.T, envs []wireEnv) map[int]*Message {
	t.Helper()
	var states [][]byte
	keep := func(st []byte) {
		states = append(states, st)
		if m := mirror(t, st); m != nil {
			states = append(states, m)
		}
	}
	for _, st := range l.states {
		keep(st)
	}
	var gens []uint32
	for g := range uint32(4) {
		gens = append(gens, g)
	}
	opened := map[int]*Message{}
	for progress := true; progress; {
		progress = false
		for i, e := range envs {
			if opened[i] != nil {
				continue
			}
			if m, err := OpenEnvelope(l.id, e.env, e.h.Sender, &OpenOptions{Generations: gens}); err == nil || !errors.Is(err, ErrUnsupportedVersion) {
				t.Fatalf("a session envelope given to format v1's opener: %v, %v", m, err)
			}
			pt, s := l.open(t, e, states)
			if pt == nil {
				continue
			}
			m, err := parseInnerV2(pt, e.h.Sender, e.h.Recipient)
			if err != nil {
				t.Fatalf("an envelope opened to a plaintext that is no message: %v", err)
			}
			opened[i], progress = m, true
			st, err := s.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			keep(st)
		}
	}
	return opened
}

// open tries every state in states, then (for a handshake to the victim)
// every prekey, on e; it returns the plaintext and the session that
// opened it, or nil.
func (l *loot) open(t *testing.T, e wireEnv, states [][]byte) ([]byte, *session.Session) {
	t.Helper()
	for _, st := range states {
		s, err := session.ParseSession(st)
		if err != nil {
			t.Fatal(err)
		}
		if pt, err := s.Open(e.env, l.at); err == nil {
			return pt, s
		}
	}
	if e.h.Type != session.TypeHandshake || e.h.Recipient != l.id.PublicKey() {
		return nil, nil
	}
	id := binary.BigEndian.Uint32(e.env[70:74]) // prekey_id (session.md §3)
	for _, k := range l.prekeysFor(t, id) {
		s, pt, err := session.Accept(l.id, e.env, func(uint32) (*session.PrekeyPrivate, bool) { return k, true }, l.at)
		if err == nil {
			return pt, s
		}
	}
	return nil, nil
}

// label names a message for a test's expectations: its text, or its kind
// in parentheses.
func label(m *Message) string {
	if m.Kind == KindText {
		return string(m.Body)
	}
	return "(" + string(m.Kind) + ")"
}

// labels returns the labels of opened, sorted.
func labels(opened map[int]*Message) []string {
	var out []string
	for _, m := range opened {
		out = append(out, label(m))
	}
	slices.Sort(out)
	return out
}

// storedPrekeyIDs returns the IDs of the prekeys in l's stored forms.
func (l *loot) storedPrekeyIDs(t *testing.T) []uint32 {
	t.Helper()
	var ids []uint32
	for _, b := range l.prekeys {
		k, err := session.ParsePrekeyPrivate(b)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, k.Public.ID)
	}
	return ids
}

// Forward secrecy on the wire. Alice opens a session with two handshakes
// to bob's prekey k1, then they talk in three rounds both ways (each turn
// a DH ratchet step), receipts included; bob's prekey k1 is rotated and,
// after its grace period, deleted (bob's clock moved on). Then the
// attacker takes bob's device: chat.db as it is on the disk while bob's
// client runs, and his 24 words. Against every envelope recorded before
// that moment, trying everything it holds (see loot.read), it opens
// none: not the handshakes (k1 is gone; no key derived from the words
// opens them), not the messages bob received (their keys are deleted),
// not those bob sent (his chains only move forward). Of what is sent
// afterwards, it opens exactly what bob's stolen state must open until
// bob's next DH step: his next message (the mirror of his sending chain),
// alice's reply and her receipt (bob's ratchet key and root key derive
// their chain); after bob received them and sent with a fresh ratchet key,
// nothing. The positive control: bob's state taken before he received
// alice's last round (with k1 still stored) opens that round and the two
// handshakes, so the search finds the keys that are there.
func TestWireForwardSecrecy(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	rec := startWiretap(t, st)
	start := time.Now()
	clock := &testClock{t: start.Add(-10 * 24 * time.Hour)} // k1 is made 10 days ago
	bobHome := filepath.Join(t.TempDir(), "bob")
	alice := openClient(t, st, au, via(rec))
	bob := openClientIn(t, st, bu, bobHome, via(rec), func(c *Config) { c.Client.Clock = clock.Now })
	clock.Set(start) // k1 is 10 days old, and will expire in 4
	mustAdd(t, alice, "bob")
	mustAdd(t, bob, "alice")

	talk(t, alice, bob, "handshake 1", "handshake 2")
	for r := 1; r <= 3; r++ {
		talk(t, bob, alice, fmt.Sprintf("bob %d.1", r), fmt.Sprintf("bob %d.2", r))
		if r < 3 {
			talk(t, alice, bob, fmt.Sprintf("alice %d.1", r), fmt.Sprintf("alice %d.2", r))
		}
	}
	for _, s := range []string{"alice 3.1", "alice 3.2", "alice 3.3"} {
		mustSend(t, alice, "bob", s)
	}
	early := steal(t, bob, bobHome, clock.Now()) // before bob receives round 3
	receiveN(t, bob, 3)
	allDelivered(t, alice, bob)

	// k1's grace period ends: the rotation deletes it. (The prekey made in
	// its place is dated 11 days ahead of the sig-server, which refuses
	// it; the deletion does not depend on that.)
	k1 := early.storedPrekeyIDs(t)
	if len(k1) != 1 {
		t.Fatalf("bob has prekeys %v, want one", k1)
	}
	clock.Set(start.Add(11*24*time.Hour + time.Hour))
	if err := bob.rotatePrekeys(testCtx(t)); err == nil {
		t.Error("the sig-server took a prekey dated 11 days ahead of it")
	}

	stolen := steal(t, bob, bobHome, clock.Now())
	theft := rec.Mark()
	if slices.Contains(stolen.storedPrekeyIDs(t), k1[0]) {
		t.Fatalf("prekey %d is still in bob's files after its grace period", k1[0])
	}
	talk(t, bob, alice, "after 1")
	talk(t, alice, bob, "after 2")
	talk(t, bob, alice, "after 3")

	envs := recorded(t, rec)
	handshakes, beforeTheft := 0, 0
	for _, e := range envs {
		if e.before(theft) {
			beforeTheft++
			if e.h.Type == session.TypeHandshake {
				handshakes++
			}
		}
	}
	// 2 handshakes, 15 more texts, a receipt for each batch.
	if handshakes != 2 || beforeTheft < 22 {
		t.Fatalf("recorded %d envelopes before the theft, %d of them handshakes", beforeTheft, handshakes)
	}
	opened := stolen.read(t, envs)
	for i, m := range opened {
		if envs[i].before(theft) {
			t.Errorf("bob's stolen state opens %q (%s from %s), recorded before the theft", label(m), wireForm(envs[i].env), m.From)
		}
	}
	if got, want := labels(opened), []string{"(receipt)", "after 1", "after 2"}; !slices.Equal(got, want) {
		t.Errorf("bob's stolen state opens %q, want %q (until bob's next DH step)", got, want)
	}

	// The positive control: bob's state before he received round 3.
	if got, want := labels(early.read(t, envs)), []string{"alice 3.1", "alice 3.2", "alice 3.3", "handshake 1", "handshake 2"}; !slices.Equal(got, want) {
		t.Errorf("bob's state taken before round 3 opens %q, want %q", got, want)
	}
	t.Logf("%d envelopes recorded (%d before the theft); the attacker held %d session states and %d prekeys (%d found only in the files' bytes)",
		len(envs), beforeTheft, len(stolen.states), len(stolen.prekeys), stolen.carved)
}

// Post-compromise security on the wire. Alice and bob talk until alice's
// last act was to receive a message of bob's new ratchet key; then the
// attacker takes alice's device (chat.db as on the disk while her client
// runs, and her words) and keeps recording. Bob sends two messages: the
// stolen state opens them (the same chain). Alice's client receives them
// and answers (its receipt) with a fresh ratchet key: one DH step with
// randomness the attacker never saw. From then on the attacker, passive,
// following the conversation with every state it can derive, opens
// nothing: not alice's receipt, not her next message, not bob's answers,
// nor anything after; nor anything recorded before the theft. The positive
// control: alice's state taken after that step (a second theft) opens what
// follows until her next step: her next message (the mirror of her sending
// chain), bob's receipt of it and his two answers.
func TestWirePostCompromise(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	rec := startWiretap(t, st)
	aliceHome := filepath.Join(t.TempDir(), "alice")
	alice := openClientIn(t, st, au, aliceHome, via(rec))
	bob := openClient(t, st, bu, via(rec))
	mustAdd(t, alice, "bob")
	mustAdd(t, bob, "alice")

	talk(t, alice, bob, "a1", "a2")
	talk(t, bob, alice, "b1")
	talk(t, alice, bob, "a3") // alice ends by receiving bob's receipt: his new ratchet key

	stolen := steal(t, alice, aliceHome, time.Now())
	theft := rec.Mark()
	talk(t, bob, alice, "x1", "x2") // alice's receipt of these is her DH step
	healed := steal(t, alice, aliceHome, time.Now())
	talk(t, alice, bob, "y1")
	talk(t, bob, alice, "z1", "z2")
	talk(t, alice, bob, "w1")

	envs := recorded(t, rec)
	opened := stolen.read(t, envs)
	for i, m := range opened {
		if envs[i].before(theft) {
			t.Errorf("alice's stolen state opens %q, recorded before the theft", label(m))
		}
	}
	if got, want := labels(opened), []string{"x1", "x2"}; !slices.Equal(got, want) {
		t.Errorf("alice's stolen state opens %q, want %q (until her DH step)", got, want)
	}
	if got, want := labels(healed.read(t, envs)), []string{"(receipt)", "y1", "z1", "z2"}; !slices.Equal(got, want) {
		t.Errorf("alice's state taken after her DH step opens %q, want %q (until her next one)", got, want)
	}
}

// Replays on the wire, by an attacker who holds no key of alice's or
// bob's. Mallory, a registered user with a NATS login of her own, takes
// every envelope the wiretap saw go from alice to bob (handshakes,
// messages, receipts) and publishes each again: under alice's sender
// token the broker refuses each (a permissions violation: a user
// publishes only under her own key); under her own, the stream takes them
// and bob refuses each (its sender is not the subject's). Then the broker
// itself (the chat-server's login, which writes the inbox stream directly:
// an operator turned attacker) stores each in bob's inbox as from alice:
// bob drops each as a replay, its message key used up (a handshake goes to
// the session it started, which refuses it the same way). No replay
// starts a session reset, and bob shows every message once.
func TestWireReplayRefused(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu, mu := st.NewUser(t, "alice"), st.NewUser(t, "bob"), st.NewUser(t, "mallory")
	rec := startWiretap(t, st)
	alice, bob := openClient(t, st, au, via(rec)), openClient(t, st, bu, via(rec))
	mustAdd(t, alice, "bob")
	mustAdd(t, bob, "alice")
	talk(t, alice, bob, "h1", "h2")
	talk(t, bob, alice, "b1")
	talk(t, alice, bob, "a1", "a2")
	talk(t, bob, alice, "b2")
	talk(t, alice, bob, "a3")
	sent := []string{"h1", "h2", "a1", "a2", "a3"}
	waitAcked(t, st, bu.Key)

	var replays [][]byte
	handshakes := 0
	for _, e := range recorded(t, rec) {
		if e.h.Sender == au.Key && e.h.Recipient == bu.Key {
			replays = append(replays, e.env)
			if e.h.Type == session.TypeHandshake {
				handshakes++
			}
		}
	}
	if handshakes != 2 || len(replays) < len(sent)+2 {
		t.Fatalf("recorded %d envelopes from alice to bob, %d handshakes", len(replays), handshakes)
	}
	before := bob.Stats()

	ctx := testCtx(t)
	errs := make(chan error, 2*len(replays))
	nc, err := Connect(ctx, st.NATSURL, mu.Identity, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	asAlice := []string{sendSubject(bu.Key, au.Key), "kez.v1.inbox." + bu.Key.String() + "." + au.Key.String()}
	for _, env := range replays {
		for _, subj := range asAlice {
			if err := nc.Publish(subj, env); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-errs:
				if !errors.Is(err, nats.ErrPermissionViolation) || !contains(err.Error(), subj) {
					t.Fatalf("publishing to %s: %v, want a permissions violation", subj, err)
				}
			case <-ctx.Done():
				t.Fatalf("the broker did not refuse mallory's publish to %s", subj)
			}
		}
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	broker := st.JetStream(t)
	for _, env := range replays {
		for _, p := range []struct {
			js   jetstream.JetStream
			subj string
		}{{js, sendSubject(bu.Key, mu.Key)}, {broker, asAlice[1]}} {
			msg := nats.NewMsg(p.subj)
			msg.Data = env
			msg.Header.Set(jetstream.MsgIDHeader, NewMessageID().String())
			if _, err := p.js.PublishMsg(ctx, msg); err != nil {
				t.Fatalf("publishing to %s: %v", p.subj, err)
			}
		}
	}
	n := uint64(len(replays))
	receiveUntil(t, bob, "the replays refused", func(int) bool {
		s := bob.Stats()
		return s.Rejected >= before.Rejected+n && s.Duplicates >= before.Duplicates+n
	})
	waitAcked(t, st, bu.Key)
	s := bob.Stats()
	if s.Rejected != before.Rejected+n || s.Duplicates != before.Duplicates+n || s.Received != before.Received ||
		s.Undecryptable != 0 || s.SessionResets != 0 || s.ReceiptsReceived != before.ReceiptsReceived {
		t.Errorf("bob's stats after %d replays each way: %+v, before %+v", n, s, before)
	}
	if in := mustInbox(t, bob, true); !slices.Equal(texts(in), sent) {
		t.Errorf("bob's inbox: %q", texts(in))
	}
	if n := countRows(t, bob, `SELECT COUNT(*) FROM messages WHERE incoming = 1`); n != len(sent) {
		t.Errorf("bob stored %d messages, want %d", n, len(sent))
	}
}
