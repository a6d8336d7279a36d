package chat

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"regexp"
	"strings"
	"testing"
	"testing/cryptotest"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/vectorid"
	"github.com/kez-lat/kez-chat/kez"
)

// The test vectors of docs/spec/envelope.md. Regenerate with
//
//	go test ./chat -run TestEnvelopeVectors -update-vectors
//
// Generation uses a fixed random source, so the file only changes when the
// format, the test cases or Go's use of randomness change.
var updateVectors = flag.Bool("update-vectors", false, "rewrite the test vectors under testdata/")

const vectorsFile = "testdata/envelope-vectors.json"

type vectorFile struct {
	Comment    []string         `json:"comment"`
	Identities []vectorIdentity `json:"identities"`
	Vectors    []vector         `json:"vectors"`
}

type vectorIdentity struct {
	Name           string   `json:"name"`
	Words          string   `json:"words"`
	Key            string   `json:"key"`
	EncryptionKeys []string `json:"encryption_keys"` // X25519 public keys, hex, index = generation
}

type vector struct {
	Name        string         `json:"name"`
	Comment     string         `json:"comment,omitempty"`
	Recipient   string         `json:"recipient"`
	Generations []uint32       `json:"generations,omitempty"`
	Sender      string         `json:"sender,omitempty"`
	Now         string         `json:"now,omitempty"`
	MaxAge      int64          `json:"max_age_seconds,omitempty"`
	MaxSkew     int64          `json:"max_skew_seconds,omitempty"`
	Envelope    string         `json:"envelope"`
	AppendZeros int            `json:"append_zeros,omitempty"`
	Message     *vectorMessage `json:"message,omitempty"`
	Error       string         `json:"error,omitempty"`
}

type vectorMessage struct {
	ID     string `json:"id"`
	From   string `json:"from"`
	To     string `json:"to"`
	SentAt string `json:"sent_at"`
	Kind   string `json:"kind"`
	Ref    string `json:"ref,omitempty"`
	Body   string `json:"body_hex"`
}

// vectorErrors maps the error names used in the vectors to the sentinels.
var vectorErrors = map[string]error{
	"ErrMalformed":          ErrMalformed,
	"ErrUnsupportedVersion": ErrUnsupportedVersion,
	"ErrUnsupportedSuite":   ErrUnsupportedSuite,
	"ErrUnknownGeneration":  ErrUnknownGeneration,
	"ErrNotForMe":           ErrNotForMe,
	"ErrWrongRecipient":     ErrWrongRecipient,
	"ErrDecrypt":            ErrDecrypt,
	"ErrBadSignature":       ErrBadSignature,
	"ErrSenderMismatch":     ErrSenderMismatch,
	"ErrTooLarge":           ErrTooLarge,
	"ErrExpired":            ErrExpired,
	"ErrClockSkew":          ErrClockSkew,
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

// bytes returns the envelope bytes of v.
func (v *vector) bytes(tb testing.TB) []byte {
	b, err := hex.DecodeString(v.Envelope)
	if err != nil {
		tb.Fatalf("%s: envelope: %v", v.Name, err)
	}
	return append(b, make([]byte, v.AppendZeros)...)
}

func (v *vector) options(tb testing.TB) *OpenOptions {
	o := &OpenOptions{Generations: v.Generations, MaxAge: time.Duration(v.MaxAge) * time.Second, MaxSkew: time.Duration(v.MaxSkew) * time.Second}
	if v.Now != "" {
		now, err := time.Parse(time.RFC3339Nano, v.Now)
		if err != nil {
			tb.Fatalf("%s: now: %v", v.Name, err)
		}
		o.Now = func() time.Time { return now }
	}
	return o
}

func TestEnvelopeVectors(t *testing.T) {
	if *updateVectors {
		writeVectors(t)
	}
	vf := loadVectors(t)
	ids := map[string]*kez.Identity{}
	for _, vi := range vf.Identities {
		id, err := kez.FromWords(vi.Words)
		if err != nil {
			t.Fatalf("identity %s: %v", vi.Name, err)
		}
		if id.PublicKey().String() != vi.Key {
			t.Fatalf("identity %s: words give %s, file says %s", vi.Name, id.PublicKey(), vi.Key)
		}
		for g, want := range vi.EncryptionKeys {
			if got := hex.EncodeToString(id.EncryptionKey(uint32(g)).PublicKey().Bytes()); got != want {
				t.Fatalf("identity %s: encryption key %d is %s, file says %s", vi.Name, g, got, want)
			}
		}
		ids[vi.Name] = id
	}
	var valid, fail int
	names := map[string]bool{}
	for _, v := range vf.Vectors {
		t.Run(v.Name, func(t *testing.T) {
			if names[v.Name] {
				t.Fatalf("duplicate vector name")
			}
			names[v.Name] = true
			if strings.HasPrefix(v.Name, "fail_") != (v.Error != "") || (v.Error == "") == (v.Message == nil) {
				t.Fatalf("a fail_ vector has an error and no message; any other has a message and no error")
			}
			me := ids[v.Recipient]
			if me == nil {
				t.Fatalf("unknown recipient %q", v.Recipient)
			}
			var sender kez.PublicKey
			if v.Sender != "" {
				sender = ids[v.Sender].PublicKey()
			}
			got, err := OpenEnvelope(me, v.bytes(t), sender, v.options(t))
			if v.Error != "" {
				fail++
				want, ok := vectorErrors[v.Error]
				if !ok {
					t.Fatalf("unknown error name %q", v.Error)
				}
				if got != nil || !errors.Is(err, want) {
					t.Fatalf("got %v, %v; want %s", got, err, v.Error)
				}
				return
			}
			valid++
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if w := messageToVector(got); *w != *v.Message {
				t.Fatalf("opened\n  %+v\nwant\n  %+v", *w, *v.Message)
			}
		})
	}
	if valid < 5 || fail < 20 {
		t.Fatalf("only %d valid and %d fail_ vectors", valid, fail)
	}
}

func messageToVector(m *Message) *vectorMessage {
	w := &vectorMessage{
		ID: m.ID.String(), From: m.From.String(), To: m.To.String(),
		SentAt: m.SentAt.UTC().Format(time.RFC3339Nano), Kind: string(m.Kind), Body: hex.EncodeToString(m.Body),
	}
	if !m.Ref.IsZero() {
		w.Ref = m.Ref.String()
	}
	return w
}

// TestSpecShowsVector checks that the worked example in the spec is the
// text_hello vector, so the two cannot drift apart.
func TestSpecShowsVector(t *testing.T) {
	spec, err := os.ReadFile("../docs/spec/envelope.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)<!-- vector text_hello -->\\s*```\\n(.*?)```").FindSubmatch(spec)
	if m == nil {
		t.Fatal("the spec has no <!-- vector text_hello --> block")
	}
	shown := strings.Join(strings.Fields(string(m[1])), "")
	for _, v := range loadVectors(t).Vectors {
		if v.Name == "text_hello" {
			if shown != v.Envelope {
				t.Fatalf("the spec shows\n%s\nthe vector is\n%s", shown, v.Envelope)
			}
			return
		}
	}
	t.Fatal("no text_hello vector")
}

// writeVectors regenerates the vector file from fixed identities, times and
// randomness.
func writeVectors(t *testing.T) {
	cryptotest.SetGlobalRandom(t, 9180)
	alice, bob, carol := vectorid.Identity(t, "alice"), vectorid.Identity(t, "bob"), vectorid.Identity(t, "carol")
	name := map[kez.PublicKey]string{alice.PublicKey(): "alice", bob.PublicKey(): "bob", carol.PublicKey(): "carol"}
	vf := &vectorFile{Comment: []string{
		"Test vectors for the KEZ chat envelope, docs/spec/envelope.md.",
		"Each vector: open `envelope` (hex, then `append_zeros` zero bytes) as `recipient`, accepting key `generations` (default [0]),",
		"expecting `sender` if set, with the clock at `now` and the freshness limits given.",
		"A vector with `message` must open to exactly it; a fail_ vector must be rejected with `error`.",
	}}
	for _, id := range []*kez.Identity{alice, bob, carol} {
		vi := vectorIdentity{Name: name[id.PublicKey()], Words: vectorid.Words(name[id.PublicKey()]), Key: id.PublicKey().String()}
		for g := uint32(0); g < 2; g++ {
			vi.EncryptionKeys = append(vi.EncryptionKeys, hex.EncodeToString(id.EncryptionKey(g).PublicKey().Bytes()))
		}
		vf.Identities = append(vf.Identities, vi)
	}
	at := func(min int) time.Time { return t0.Add(time.Duration(min) * time.Minute) }
	seal := func(from, to *kez.Identity, gen uint32, m Message) []byte {
		return mustSeal(t, from, recipientOf(to, gen), m)
	}
	add := func(v vector, env []byte) {
		v.Envelope = hex.EncodeToString(env)
		vf.Vectors = append(vf.Vectors, v)
	}
	valid := func(v vector, env []byte) {
		m, err := OpenEnvelope(map[string]*kez.Identity{"alice": alice, "bob": bob, "carol": carol}[v.Recipient], env, kez.PublicKey{}, v.options(t))
		if err != nil {
			t.Fatalf("%s: %v", v.Name, err)
		}
		v.Message = messageToVector(m)
		add(v, env)
	}

	hello := seal(alice, bob, 0, Message{SentAt: at(0), Kind: KindText, Body: []byte("hello bob")})
	helloID := decodedID(t, bob, hello)
	valid(vector{Name: "text_hello", Comment: "alice to bob, generation 0", Recipient: "bob", Sender: "alice"}, hello)
	valid(vector{Name: "receipt", Comment: "bob acknowledges text_hello", Recipient: "alice", Sender: "bob"},
		seal(bob, alice, 0, Message{SentAt: at(1), Kind: KindReceipt, Ref: helloID, Body: []byte("read")}))
	valid(vector{Name: "text_reply_unicode", Comment: "a reply with a non-ASCII body, opened without an expected sender", Recipient: "bob"},
		seal(alice, bob, 0, Message{SentAt: at(2), Kind: KindText, Ref: helloID, Body: []byte("ça va? 👋 — ünïcode")}))
	gen1 := seal(carol, bob, 1, Message{SentAt: at(3), Kind: KindText, Body: []byte("to your rotated key")})
	valid(vector{Name: "generation_1", Comment: "carol to bob's generation-1 key", Recipient: "bob", Sender: "carol", Generations: []uint32{0, 1}}, gen1)
	bin := make([]byte, 256)
	for i := range bin {
		bin[i] = byte(i)
	}
	valid(vector{Name: "custom_kind_binary", Comment: "a kind this version does not define, with a binary body", Recipient: "bob", Sender: "alice"},
		seal(alice, bob, 0, Message{SentAt: at(4), Kind: "file.offer", Body: bin}))
	valid(vector{Name: "empty_body_to_self", Comment: "alice to herself, empty body", Recipient: "alice", Sender: "alice"},
		seal(alice, alice, 0, Message{SentAt: at(5), Kind: KindText}))
	valid(vector{Name: "within_freshness_limits", Comment: "text_hello opened 59 minutes later with max age 1 h", Recipient: "bob", Sender: "alice",
		Now: at(59).Format(time.RFC3339Nano), MaxAge: 3600, MaxSkew: 300}, hello)

	fail := func(name, comment, recipient, sender, errName string, env []byte) {
		add(vector{Name: name, Comment: comment, Recipient: recipient, Sender: sender, Error: errName}, env)
	}
	set := func(b []byte, off int, val ...byte) []byte {
		c := append([]byte(nil), b...)
		copy(c[off:], val)
		return c
	}
	fail("fail_empty", "no bytes", "bob", "", "ErrMalformed", nil)
	fail("fail_bad_magic", "magic KEZX", "bob", "", "ErrMalformed", set(hello, 3, 'X'))
	fail("fail_unknown_version", "version byte 2", "bob", "", "ErrUnsupportedVersion", set(hello, 4, 2))
	fail("fail_unknown_suite_mlkem768x25519", "KEM 0x647a (MLKEM768X25519), not accepted by this version", "bob", "", "ErrUnsupportedSuite", set(hello, 5, 0x64, 0x7a))
	fail("fail_unknown_suite_aes128gcm", "AEAD 0x0001 (AES-128-GCM)", "bob", "", "ErrUnsupportedSuite", set(hello, 9, 0, 1))
	fail("fail_truncated_header", "cut inside the recipient key", "bob", "", "ErrMalformed", hello[:60])
	fail("fail_truncated_enc", "cut inside enc", "bob", "", "ErrMalformed", hello[:100])
	fail("fail_truncated_ciphertext", "header and 100 bytes of ciphertext", "bob", "", "ErrMalformed", hello[:113+100])
	fail("fail_truncated_tag", "last byte removed", "bob", "", "ErrDecrypt", hello[:len(hello)-1])
	fail("fail_enc_length", "enc length 33", "bob", "", "ErrMalformed", set(hello, 80, 33))
	fail("fail_tampered_ciphertext", "one ciphertext byte flipped", "bob", "", "ErrDecrypt", flip(hello, 150))
	fail("fail_tampered_tag", "last tag byte flipped", "bob", "", "ErrDecrypt", flip(hello, len(hello)-1))
	fail("fail_tampered_enc", "one enc byte flipped", "bob", "", "ErrDecrypt", flip(hello, 90))
	fail("fail_low_order_enc", "enc is the all-zero X25519 point", "bob", "", "ErrDecrypt", set(hello, 81, make([]byte, 32)...))
	fail("fail_tampered_generation", "generation 0 changed to 1 in the header, both accepted", "bob", "", "ErrDecrypt", set(hello, 14, 1))
	vf.Vectors[len(vf.Vectors)-1].Generations = []uint32{0, 1}
	fail("fail_tampered_header_sender", "header sender changed from alice to carol; no expected sender", "bob", "", "ErrDecrypt",
		set(hello, 15, carol.PublicKey().Ed25519()...))
	fail("fail_not_for_me", "text_hello opened by carol", "carol", "alice", "ErrNotForMe", hello)
	fail("fail_header_recipient_changed", "text_hello with carol as the header recipient, opened by carol", "carol", "", "ErrDecrypt",
		set(hello, 47, carol.PublicKey().Ed25519()...))
	fail("fail_sender_mismatch", "text_hello, but the subject says carol sent it", "bob", "carol", "ErrSenderMismatch", hello)
	fail("fail_unknown_generation", "generation_1 opened accepting only generation 0", "bob", "carol", "ErrUnknownGeneration", gen1)
	fail("fail_oversize", "text_hello padded to 65537 bytes", "bob", "", "ErrTooLarge", hello)
	vf.Vectors[len(vf.Vectors)-1].AppendZeros = MaxEnvelopeSize + 1 - len(hello)
	vf.Vectors = append(vf.Vectors,
		vector{Name: "fail_expired", Comment: "text_hello opened 61 minutes later with max age 1 h", Recipient: "bob", Sender: "alice",
			Now: at(61).Format(time.RFC3339Nano), MaxAge: 3600, Envelope: hex.EncodeToString(hello), Error: "ErrExpired"},
		vector{Name: "fail_from_future", Comment: "text_hello opened 6 minutes before it was sent, max skew 5 min", Recipient: "bob", Sender: "alice",
			Now: at(-6).Format(time.RFC3339Nano), MaxSkew: 300, Envelope: hex.EncodeToString(hello), Error: "ErrClockSkew"})

	// Envelopes Seal refuses to make.
	base := Message{ID: MessageID{0x11, 0x22}, From: alice.PublicKey(), To: bob.PublicKey(), SentAt: at(10), Kind: KindText, Body: []byte("forged?")}
	toBob := func(signer *kez.Identity, m Message, mutate func([]byte) []byte) []byte {
		return rawEnvelope{from: m.From, to: bob.PublicKey(), encKey: bob.EncryptionKey(0).PublicKey(), signer: signer, msg: m, mutate: mutate}.seal(t)
	}
	with := func(f func(*Message)) Message { m := base; f(&m); return m }
	fail("fail_bad_signature", "last signature byte flipped before encryption", "bob", "alice", "ErrBadSignature",
		toBob(alice, base, func(b []byte) []byte { b[len(b)-1] ^= 1; return b }))
	fail("fail_signed_by_other_key", "claims to be from alice, signed by carol", "bob", "alice", "ErrBadSignature", toBob(carol, base, nil))
	fail("fail_inner_sender_differs", "header from carol, signed inner message claims alice", "bob", "carol", "ErrSenderMismatch",
		rawEnvelope{from: carol.PublicKey(), to: bob.PublicKey(), encKey: bob.EncryptionKey(0).PublicKey(), signer: carol, msg: base}.seal(t))
	toCarol := seal(alice, carol, 0, Message{SentAt: at(11), Kind: KindText, Body: []byte("for carol only")})
	inner := decryptInner(t, carol, toCarol)
	fail("fail_rewrapped_to_other_recipient", "alice's signed message to carol, re-wrapped by carol to bob", "bob", "alice", "ErrWrongRecipient",
		rawEnvelope{from: alice.PublicKey(), to: bob.PublicKey(), encKey: bob.EncryptionKey(0).PublicKey(), inner: inner}.seal(t))
	fail("fail_lifted_into_new_envelope", "alice's signed message to carol, sealed again to carol with a new enc", "carol", "alice", "ErrBadSignature",
		rawEnvelope{from: alice.PublicKey(), to: carol.PublicKey(), encKey: carol.EncryptionKey(0).PublicKey(), inner: inner}.seal(t))
	fail("fail_zero_message_id", "signed, but the message ID is zero", "bob", "alice", "ErrMalformed", toBob(alice, with(func(m *Message) { m.ID = MessageID{} }), nil))
	fail("fail_bad_kind", "signed, kind \"Text\"", "bob", "alice", "ErrMalformed", toBob(alice, with(func(m *Message) { m.Kind = "Text" }), nil))
	fail("fail_receipt_without_ref", "signed receipt with no reference", "bob", "alice", "ErrMalformed", toBob(alice, with(func(m *Message) { m.Kind = KindReceipt }), nil))
	fail("fail_text_not_utf8", "signed text body 0xff 0xfe", "bob", "alice", "ErrMalformed", toBob(alice, with(func(m *Message) { m.Body = []byte{0xff, 0xfe} }), nil))
	fail("fail_body_length_mismatch", "signed, body length one more than the bytes present", "bob", "alice", "ErrMalformed",
		toBob(alice, base, func(b []byte) []byte { b[len(b)-sigLen-len(base.Body)-1]++; return b }))

	out, err := json.MarshalIndent(vf, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(vectorsFile, append(out, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %d vectors to %s", len(vf.Vectors), vectorsFile)
}

func decodedID(tb testing.TB, id *kez.Identity, env []byte) MessageID {
	m, err := OpenEnvelope(id, env, kez.PublicKey{}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return m.ID
}
