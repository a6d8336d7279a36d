package session

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
	"testing/cryptotest"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/vectorid"
	"github.com/kez-lat/kez-chat/kez"
)

// The test vectors of docs/spec/session.md §13. Regenerate with
//
//	go test ./session -run TestSessionVectors -update-vectors
//
// Generation uses a fixed random source, so the file only changes when the
// format, the transcript or Go's use of randomness change.
var updateVectors = flag.Bool("update-vectors", false, "rewrite testdata/session-vectors.json")

const vectorsFile = "testdata/session-vectors.json"

type vectorFile struct {
	Comment    []string         `json:"comment"`
	Identities []vectorIdentity `json:"identities"`
	Prekey     vectorPrekey     `json:"prekey"`
	Handshake  vectorHandshake  `json:"handshake"`
	Now        string           `json:"now"`
	Messages   []vectorMessage  `json:"messages"`
	Steps      []vectorStep     `json:"steps"`
	Failures   []vectorFailure  `json:"failures"`
}

type vectorIdentity struct {
	Name  string `json:"name"`
	Words string `json:"words"`
	Key   string `json:"key"`
}

type vectorPrekey struct {
	Owner   string `json:"owner"`
	ID      uint32 `json:"id"`
	Seeds   string `json:"seeds"`
	Created string `json:"created"`
	Expires string `json:"expires"`
	Record  string `json:"record"`
}

type vectorHandshake struct {
	InitDHPrivate string `json:"init_dh_private"`
	SK            string `json:"sk"`
	SessionID     string `json:"session_id"`
}

type vectorMessage struct {
	From           string `json:"from"`
	To             string `json:"to"`
	Plaintext      string `json:"plaintext_hex"`
	Envelope       string `json:"envelope"`
	RatchetPrivate string `json:"ratchet_private,omitempty"`
}

type vectorStep struct {
	Seal   *int `json:"seal,omitempty"`
	Accept *int `json:"accept,omitempty"`
	Open   *int `json:"open,omitempty"`
}

type vectorFailure struct {
	Name        string `json:"name"`
	Comment     string `json:"comment"`
	Party       string `json:"party"`
	Op          string `json:"op"`
	AfterStep   *int   `json:"after_step,omitempty"`
	Now         string `json:"now,omitempty"`
	Envelope    string `json:"envelope"`
	AppendZeros int    `json:"append_zeros,omitempty"`
	Error       string `json:"error"`
}

// vectorErrors maps the error names used in the vectors to the sentinels.
var vectorErrors = map[string]error{
	"ErrMalformed":          ErrMalformed,
	"ErrUnsupportedVersion": ErrUnsupportedVersion,
	"ErrWrongRecipient":     ErrWrongRecipient,
	"ErrWrongSender":        ErrWrongSender,
	"ErrWrongSession":       ErrWrongSession,
	"ErrUnknownPrekey":      ErrUnknownPrekey,
	"ErrBadSignature":       ErrBadSignature,
	"ErrDecrypt":            ErrDecrypt,
	"ErrReplay":             ErrReplay,
	"ErrTooFarAhead":        ErrTooFarAhead,
	"ErrTooLarge":           ErrTooLarge,
}

func loadVectors(tb testing.TB) *vectorFile {
	tb.Helper()
	b, err := os.ReadFile(vectorsFile)
	if err != nil {
		tb.Fatal(err)
	}
	var vf vectorFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&vf); err != nil {
		tb.Fatalf("%s: %v", vectorsFile, err)
	}
	return &vf
}

func unhex(tb testing.TB, what, s string) []byte {
	tb.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		tb.Fatalf("%s: %v", what, err)
	}
	return b
}

func parseTime(tb testing.TB, s string) time.Time {
	tb.Helper()
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		tb.Fatal(err)
	}
	return t
}

// emptyReader fails every read: a Seal that needs no new ratchet key must
// not read.
type emptyReader struct{}

func (emptyReader) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }

// transcript is the state of a replay of the vectors' steps.
type transcript struct {
	tb     testing.TB
	vf     *vectorFile
	ids    map[string]*kez.Identity
	prekey *PrekeyPrivate
	now    time.Time
	// sessions by party, and their stored form after each step
	sessions map[string]*Session
	states   []map[string][]byte
}

func TestSessionVectors(t *testing.T) {
	if *updateVectors {
		writeVectors(t)
	}
	vf := loadVectors(t)
	tr := replay(t, vf)
	if len(vf.Failures) < 40 {
		t.Fatalf("only %d fail_ vectors", len(vf.Failures))
	}
	names := map[string]bool{}
	for _, f := range vf.Failures {
		t.Run(f.Name, func(t *testing.T) {
			if names[f.Name] || !strings.HasPrefix(f.Name, "fail_") {
				t.Fatalf("a failure's name must be unique and start with fail_")
			}
			names[f.Name] = true
			tr.checkFailure(t, &f)
		})
	}
}

// replay checks the identities, the prekey and the transcript, and returns
// the states after each step.
func replay(t testing.TB, vf *vectorFile) *transcript {
	tr := &transcript{tb: t, vf: vf, ids: map[string]*kez.Identity{}, sessions: map[string]*Session{}, now: parseTime(t, vf.Now)}
	for _, vi := range vf.Identities {
		id, err := kez.FromWords(vi.Words)
		if err != nil {
			t.Fatalf("identity %s: %v", vi.Name, err)
		}
		if id.PublicKey().String() != vi.Key {
			t.Fatalf("identity %s: the words give %s, the file says %s", vi.Name, id.PublicKey(), vi.Key)
		}
		tr.ids[vi.Name] = id
	}
	// The prekey, rebuilt from its seeds, must be the record.
	vp := vf.Prekey
	created, expires := parseTime(t, vp.Created), parseTime(t, vp.Expires)
	k, err := NewPrekey(bytes.NewReader(unhex(t, "seeds", vp.Seeds)), tr.ids[vp.Owner], vp.ID, created, expires.Sub(created))
	if err != nil {
		t.Fatal(err)
	}
	if rec, _ := k.Public.MarshalBinary(); hex.EncodeToString(rec) != vp.Record {
		t.Fatalf("the prekey from its seeds is\n%x\nthe file says\n%s", rec, vp.Record)
	}
	if err := k.Public.Verify(tr.ids[vp.Owner].PublicKey(), tr.now); err != nil {
		t.Fatal(err)
	}
	tr.prekey = k

	msgs := vf.Messages
	env := func(i int) []byte { return unhex(t, "envelope", msgs[i].Envelope) }
	pt := func(i int) []byte { return unhex(t, "plaintext", msgs[i].Plaintext) }

	// Alice, the initiator, from the handshake's secrets: her prefix must
	// be message 0's.
	hs0 := env(0)
	var p parsed
	if err := parse(hs0, hybridSuite, &p); err != nil {
		t.Fatal(err)
	}
	var a [keyLen]byte
	copy(a[:], unhex(t, "init_dh_private", vf.Handshake.InitDHPrivate))
	initDH, err := publicKey(&a)
	if err != nil || initDH != p.initDH {
		t.Fatalf("init_dh_private gives %x, the handshake has %x", initDH, p.initDH)
	}
	sk := unhex(t, "sk", vf.Handshake.SK)
	alice, err := newInitiator(tr.ids[msgs[0].From], bytes.Clone(hs0[:offEnc]), p.enc, &a, &initDH, sk, &k.Public.RatchetPublic)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(alice.prefix, p.prefix) {
		t.Fatal("alice's prefix, rebuilt from the handshake's secrets, is not message 0's")
	}
	if id := alice.ID(); hex.EncodeToString(id[:]) != vf.Handshake.SessionID {
		t.Fatalf("session ID %x, the file says %s", id, vf.Handshake.SessionID)
	}
	tr.sessions[msgs[0].From] = alice

	for si, st := range vf.Steps {
		switch {
		case st.Seal != nil:
			m := msgs[*st.Seal]
			var rnd io.Reader = emptyReader{}
			if m.RatchetPrivate != "" {
				rnd = bytes.NewReader(unhex(t, "ratchet_private", m.RatchetPrivate))
			}
			got, err := tr.sessions[m.From].Seal(rnd, pt(*st.Seal))
			if err != nil || !bytes.Equal(got, env(*st.Seal)) {
				t.Fatalf("step %d: sealing message %d gives\n%x (%v)\nthe file says\n%s", si, *st.Seal, got, err, m.Envelope)
			}
		case st.Accept != nil:
			i := *st.Accept
			var p parsed
			if err := parse(env(i), hybridSuite, &p); err != nil {
				t.Fatal(err)
			}
			if got, err := handshakeSecret(k.KEMKey(), &p); err != nil || !bytes.Equal(got, sk) {
				t.Fatalf("step %d: the recipient derives SK %x (%v), the file says %x", si, got, err, sk)
			}
			s, got, err := Accept(tr.ids[msgs[i].To], env(i), lookupOf(k), tr.now)
			if err != nil || !bytes.Equal(got, pt(i)) {
				t.Fatalf("step %d: accepting message %d: %q, %v", si, i, got, err)
			}
			tr.sessions[msgs[i].To] = s
		case st.Open != nil:
			i := *st.Open
			got, err := tr.sessions[msgs[i].To].Open(env(i), tr.now)
			if err != nil || !bytes.Equal(got, pt(i)) {
				t.Fatalf("step %d: opening message %d: %q, %v", si, i, got, err)
			}
		default:
			t.Fatalf("step %d does nothing", si)
		}
		snap := map[string][]byte{}
		for name, s := range tr.sessions {
			b := state(t, s)
			c, err := ParseSession(b)
			if err != nil || !bytes.Equal(state(t, c), b) {
				t.Fatalf("step %d: %s's state does not round-trip: %v", si, name, err)
			}
			snap[name] = b
		}
		tr.states = append(tr.states, snap)
	}
	return tr
}

func (tr *transcript) checkFailure(t *testing.T, f *vectorFailure) {
	want, ok := vectorErrors[f.Error]
	if !ok {
		t.Fatalf("unknown error name %q", f.Error)
	}
	env := append(unhex(t, "envelope", f.Envelope), make([]byte, f.AppendZeros)...)
	now := tr.now
	if f.Now != "" {
		now = parseTime(t, f.Now)
	}
	me := tr.ids[f.Party]
	if me == nil {
		t.Fatalf("unknown party %q", f.Party)
	}
	switch f.Op {
	case "accept":
		s, pt, err := Accept(me, env, lookupOf(tr.prekey), now)
		if s != nil || pt != nil || !errors.Is(err, want) {
			t.Fatalf("Accept: %v; want %s", err, f.Error)
		}
	case "open":
		if f.AfterStep == nil || *f.AfterStep >= len(tr.states) || tr.states[*f.AfterStep][f.Party] == nil {
			t.Fatalf("no state of %s after step %v", f.Party, f.AfterStep)
		}
		before := tr.states[*f.AfterStep][f.Party]
		s, err := ParseSession(before)
		if err != nil {
			t.Fatal(err)
		}
		refuse(t, s, env, now, want)
	default:
		t.Fatalf("unknown op %q", f.Op)
	}
}

// TestSpecShowsVector checks that the worked example in the spec is
// message 2 of the vectors, so the two cannot drift apart.
func TestSpecShowsVector(t *testing.T) {
	spec, err := os.ReadFile("../docs/spec/session.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)<!-- vector first_reply -->\\s*```\\n(.*?)```").FindSubmatch(spec)
	if m == nil {
		t.Fatal("the spec has no <!-- vector first_reply --> block")
	}
	if shown := strings.Join(strings.Fields(string(m[1])), ""); shown != loadVectors(t).Messages[2].Envelope {
		t.Fatalf("the spec shows\n%s\nmessage 2 is\n%s", shown, loadVectors(t).Messages[2].Envelope)
	}
}

// recorder keeps what is read through it.
type recorder struct {
	r   io.Reader
	got []byte
}

func (r *recorder) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.got = append(r.got, p[:n]...)
	return n, err
}

func (r *recorder) take() string {
	s := hex.EncodeToString(r.got)
	r.got = nil
	return s
}

// writeVectors regenerates the vector file from fixed identities, times and
// randomness.
func writeVectors(t *testing.T) {
	cryptotest.SetGlobalRandom(t, 0x5e55)
	names := []string{"alice", "bob", "carol"}
	ids := map[string]*kez.Identity{}
	vf := &vectorFile{Comment: []string{
		"Test vectors for KEZ sessions (envelope format v2), docs/spec/session.md §13.",
		"Replay `steps` over `messages`: seal (byte for byte, with `ratchet_private` as the new ratchet key where one is due),",
		"accept (with bob's `prekey`; the SK derived must be `handshake.sk`) and open (to exactly `plaintext_hex`), with the clock at `now`.",
		"Each fail_ vector must be refused with `error` by `party`: `op` accept, or open with the party's state after step `after_step`.",
	}}
	for _, n := range names {
		ids[n] = vectorid.Identity(t, n)
		vf.Identities = append(vf.Identities, vectorIdentity{Name: n, Words: vectorid.Words(n), Key: ids[n].PublicKey().String()})
	}
	alice, bob, carol := ids["alice"], ids["bob"], ids["carol"]
	now := t0
	vf.Now = now.Format(time.RFC3339Nano)

	seeds := make([]byte, 64)
	rand.Read(seeds)
	created := now.Add(-24 * time.Hour)
	prekey, err := NewPrekey(bytes.NewReader(seeds), bob, 1, created, 14*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := prekey.Public.MarshalBinary()
	vf.Prekey = vectorPrekey{Owner: "bob", ID: 1, Seeds: hex.EncodeToString(seeds),
		Created: prekey.Public.Created.Format(time.RFC3339Nano), Expires: prekey.Public.Expires.Format(time.RFC3339Nano), Record: hex.EncodeToString(rec)}

	rnd := &recorder{r: rand.Reader}
	sessions := map[string]*Session{}
	sessions["alice"], err = Initiate(rnd, alice, &prekey.Public, now)
	if err != nil {
		t.Fatal(err)
	}
	vf.Handshake.InitDHPrivate = rnd.take()
	id := sessions["alice"].ID()
	vf.Handshake.SessionID = hex.EncodeToString(id[:])

	var envs [][]byte
	seal := func(from, to, msg string) {
		i := len(vf.Messages)
		env, err := sessions[from].Seal(rnd, []byte(msg))
		if err != nil {
			t.Fatal(err)
		}
		envs = append(envs, env)
		vf.Messages = append(vf.Messages, vectorMessage{From: from, To: to, Plaintext: hex.EncodeToString([]byte(msg)),
			Envelope: hex.EncodeToString(env), RatchetPrivate: rnd.take()})
		vf.Steps = append(vf.Steps, vectorStep{Seal: &i})
	}
	open := func(i int) {
		m := vf.Messages[i]
		if _, err := sessions[m.To].Open(envs[i], now); err != nil {
			t.Fatalf("opening message %d: %v", i, err)
		}
		vf.Steps = append(vf.Steps, vectorStep{Open: &i})
	}
	seal("alice", "bob", "hello bob")      // 0, a handshake
	seal("alice", "bob", "are you there?") // 1, the same handshake, the next message
	zero := 0
	var p parsed
	if err := parse(envs[0], hybridSuite, &p); err != nil {
		t.Fatal(err)
	}
	sk, err := handshakeSecret(prekey.KEMKey(), &p)
	if err != nil {
		t.Fatal(err)
	}
	vf.Handshake.SK = hex.EncodeToString(sk)
	if sessions["bob"], _, err = Accept(bob, envs[0], lookupOf(prekey), now); err != nil {
		t.Fatal(err)
	}
	vf.Steps = append(vf.Steps, vectorStep{Accept: &zero})
	open(1)
	seal("bob", "alice", "hi alice")           // 2, bob's first DH step
	seal("bob", "alice", "yes, here")          // 3
	seal("bob", "alice", "ça va? 👋 — ünïcode") // 4
	open(2)                                    // step 7
	open(4)                                    // step 8, out of order: message 3's key is skipped
	open(3)                                    // step 9
	seal("alice", "bob", "fine, thanks")       // 5, alice's DH step (pn 2)
	seal("alice", "bob", "")                   // 6, empty
	open(5)                                    // step 12
	open(6)                                    // step 13
	seal("bob", "alice", "bye")                // 7, bob's second DH step (pn 3)
	open(7)                                    // step 15
	if len(vf.Steps) != 16 {
		t.Fatalf("%d steps; the failures below count on 16", len(vf.Steps))
	}

	step := func(i int) *int { return &i }
	set := func(b []byte, off int, v ...byte) []byte { c := bytes.Clone(b); copy(c[off:], v); return c }
	flip := func(b []byte, off int) []byte { c := bytes.Clone(b); c[off] ^= 0x01; return c }
	n32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	add := func(f vectorFailure, env []byte) {
		f.Envelope = hex.EncodeToString(env)
		vf.Failures = append(vf.Failures, f)
	}
	hsFail := func(name, comment, party, errName string, env []byte) {
		add(vectorFailure{Name: name, Comment: comment, Party: party, Op: "accept", Error: errName}, env)
	}
	hs := envs[0]
	pl := hybridSuite.prefixLen()
	hsFail("fail_empty", "no bytes", "bob", "ErrMalformed", nil)
	hsFail("fail_bad_magic", "magic KEZX", "bob", "ErrMalformed", set(hs, 3, 'X'))
	hsFail("fail_version_1", "version byte 1 (package chat's format)", "bob", "ErrUnsupportedVersion", set(hs, 4, 1))
	hsFail("fail_unknown_type", "type 3", "bob", "ErrUnsupportedVersion", set(hs, 5, 3))
	add(vectorFailure{Name: "fail_oversize", Comment: "message 0 padded to 65537 bytes", Party: "bob", Op: "accept", Error: "ErrTooLarge",
		AppendZeros: MaxEnvelopeSize + 1 - len(hs)}, hs)
	hsFail("fail_handshake_truncated_header", "cut inside the recipient key", "bob", "ErrMalformed", hs[:60])
	hsFail("fail_handshake_truncated_enc", "cut inside enc", "bob", "ErrMalformed", hs[:600])
	hsFail("fail_handshake_truncated_before_tag", "1349 bytes, one short of the smallest handshake", "bob", "ErrMalformed", hs[:handshakeMinLen-1])
	hsFail("fail_handshake_truncated_tag", "last byte removed", "bob", "ErrDecrypt", hs[:len(hs)-1])
	hsFail("fail_handshake_unknown_kem", "KEM 0x0020 (DHKEM X25519)", "bob", "ErrUnsupportedVersion", set(hs, offKEMID, 0x00, 0x20))
	hsFail("fail_handshake_enc_length", "enc length 1121", "bob", "ErrMalformed", set(hs, offEncLen, 0x04, 0x61))
	hsFail("fail_handshake_dh_pub_not_init_dh", "the embedded message's dh_pub changed", "bob", "ErrMalformed", flip(hs, pl))
	hsFail("fail_handshake_wrong_recipient", "message 0 accepted by carol", "carol", "ErrWrongRecipient", hs)
	hsFail("fail_handshake_unknown_prekey", "prekey_id 2, which bob does not keep", "bob", "ErrUnknownPrekey", set(hs, offPrekeyID, n32(2)...))
	hsFail("fail_handshake_tampered_sender", "sender changed from alice to carol", "bob", "ErrBadSignature", set(hs, offSender, carol.PublicKey().Ed25519()...))
	hsFail("fail_handshake_tampered_enc", "one enc byte flipped", "bob", "ErrBadSignature", flip(hs, 500))
	hsFail("fail_handshake_tampered_init_dh", "init_dh and dh_pub changed alike", "bob", "ErrBadSignature", flip(flip(hs, pl-sigLen-1), pl+keyLen-1))
	hsFail("fail_handshake_tampered_signature", "last signature byte flipped", "bob", "ErrBadSignature", flip(hs, pl-1))
	otherSig, err := carol.Sign(handshakeContext, hs[:pl-sigLen])
	if err != nil {
		t.Fatal(err)
	}
	hsFail("fail_handshake_signed_by_other_key", "claims alice, signed by carol", "bob", "ErrBadSignature", set(hs, pl-sigLen, otherSig...))
	hsFail("fail_handshake_too_far_ahead", "n set to 1001", "bob", "ErrTooFarAhead", set(hs, pl+keyLen+4, n32(MaxSkip+1)...))
	hsFail("fail_handshake_tampered_n", "n set to 1", "bob", "ErrDecrypt", set(hs, pl+keyLen+4, n32(1)...))
	hsFail("fail_handshake_tampered_pn", "pn set to 1", "bob", "ErrDecrypt", set(hs, pl+keyLen, n32(1)...))
	hsFail("fail_handshake_tampered_ciphertext", "one ciphertext byte flipped", "bob", "ErrDecrypt", flip(hs, handshakeMinLen-tagLen))
	hsFail("fail_handshake_tampered_tag", "last tag byte flipped", "bob", "ErrDecrypt", flip(hs, len(hs)-1))
	hsFail("fail_handshake_type_2", "a message (message 2) given to accept", "alice", "ErrMalformed", envs[2])

	openFail := func(name, comment, party string, after int, errName string, env []byte) {
		add(vectorFailure{Name: name, Comment: comment, Party: party, Op: "open", AfterStep: step(after), Error: errName}, env)
	}
	m2 := envs[2] // alice opens it at step 7
	openFail("fail_message_truncated", "message 2 cut to 141 bytes", "alice", 6, "ErrMalformed", m2[:msgMinLen-1])
	openFail("fail_message_truncated_tag", "message 2 without its last byte", "alice", 6, "ErrDecrypt", m2[:len(m2)-1])
	openFail("fail_message_version_1", "message 2 with version byte 1", "alice", 6, "ErrUnsupportedVersion", set(m2, 4, 1))
	openFail("fail_replay", "message 2 again, after it was opened", "alice", 7, "ErrReplay", m2)
	openFail("fail_replay_skipped_key_used", "message 3 again, after its skipped key was used", "alice", 9, "ErrReplay", envs[3])
	openFail("fail_replay_handshake", "message 1 (a handshake) again, through open", "bob", 3, "ErrReplay", envs[1])
	openFail("fail_replay_earlier_chain", "message 4 again, after two more DH steps", "alice", 15, "ErrReplay", envs[4])
	add(vectorFailure{Name: "fail_skipped_key_expired", Comment: "message 3, its key skipped at `now`, opened 30 days and 1 ms later", Party: "alice", Op: "open",
		AfterStep: step(8), Now: now.Add(SkippedKeyLifetime + time.Millisecond).Format(time.RFC3339Nano), Error: "ErrReplay"}, envs[3])
	openFail("fail_too_far_ahead", "message 3 with n set to 1002; alice is at 1", "alice", 7, "ErrTooFarAhead", set(envs[3], offDH2+keyLen+4, n32(MaxSkip+2)...))
	openFail("fail_too_far_ahead_across_step", "message 5 with pn set to 1003; bob is at 2 in alice's previous chain", "bob", 11, "ErrTooFarAhead", set(envs[5], offDH2+keyLen, n32(MaxSkip+3)...))
	openFail("fail_wrong_sender", "message 2 with carol as its sender", "alice", 6, "ErrWrongSender", set(m2, offSender, carol.PublicKey().Ed25519()...))
	openFail("fail_wrong_recipient", "message 2 with carol as its recipient", "alice", 6, "ErrWrongRecipient", set(m2, offRecipient, carol.PublicKey().Ed25519()...))
	openFail("fail_wrong_recipient_bob", "message 2 opened by its sender", "bob", 6, "ErrWrongRecipient", m2)
	openFail("fail_wrong_session", "message 2 with a session ID byte flipped", "alice", 6, "ErrWrongSession", flip(m2, offSessionID))
	openFail("fail_tampered_dh_pub", "message 2 with a dh_pub byte flipped", "alice", 6, "ErrDecrypt", flip(m2, offDH2))
	openFail("fail_tampered_pn", "message 2 with pn 1", "alice", 6, "ErrDecrypt", set(m2, offDH2+keyLen, n32(1)...))
	openFail("fail_tampered_n", "message 2 with n 1", "alice", 6, "ErrDecrypt", set(m2, offDH2+keyLen+4, n32(1)...))
	openFail("fail_tampered_ciphertext", "message 2 with its first ciphertext byte flipped", "alice", 6, "ErrDecrypt", flip(m2, msgHeaderLen))
	openFail("fail_tampered_tag", "message 2 with its last byte flipped", "alice", 6, "ErrDecrypt", flip(m2, len(m2)-1))
	openFail("fail_ciphertext_of_another_message", "message 3's header with message 2's ciphertext", "alice", 7, "ErrDecrypt",
		append(bytes.Clone(envs[3][:msgHeaderLen]), m2[msgHeaderLen:]...))

	out, err := json.MarshalIndent(vf, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(vectorsFile, append(out, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %d messages and %d fail_ vectors to %s", len(vf.Messages), len(vf.Failures), vectorsFile)
}
