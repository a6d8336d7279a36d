package chat

import (
	"bytes"
	"database/sql"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/internal/testenv/tcprec"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/session"
)

// The attacker of the wire tests (session_wire_test.go): what it reads
// out of the recording, what it takes from a device, and how it tries
// every state and prekey it holds on the envelopes.

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
