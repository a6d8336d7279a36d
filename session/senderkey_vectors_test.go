package session

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/kez-lat/kez-chat/kez"
)

// The test vectors of docs/spec/senderkeys.md §13 (the file, and the
// values printed on the page), rewritten with the session vectors by
//
//	go test ./session -run TestSenderKeyVectors -update-vectors
//
// Every input is fixed, and ed25519 signatures are deterministic, so the
// file changes only when the format does.

const senderKeyVectorsFile = "testdata/senderkey-vectors.json"

type skVectorFile struct {
	Comment       []string          `json:"comment"`
	ChainKey      string            `json:"chain_key"`
	SigningSeed   string            `json:"signing_seed"`
	SigningPublic string            `json:"signing_public"`
	GID           string            `json:"gid"`
	Epoch         uint64            `json:"epoch"`
	Device        string            `json:"device"`
	DeviceHex     string            `json:"device_hex"`
	Distribution  string            `json:"distribution"`
	Chain         []skVectorChain   `json:"chain"`
	Messages      []skVectorMessage `json:"messages"`
	SenderKey     string            `json:"sender_key_after"`
	ReceiverKey   string            `json:"receiver_key_after"`
	Failures      []skVectorFailure `json:"failures"`
}

// skVectorChain is one step of the symmetric chain: CK_i, the message key
// and the AEAD key and nonce derived from it.
type skVectorChain struct {
	Iteration  uint32 `json:"iteration"`
	ChainKey   string `json:"chain_key"`
	MessageKey string `json:"message_key"`
	AEADKey    string `json:"aead_key"`
	Nonce      string `json:"nonce"`
}

type skVectorMessage struct {
	Iteration  uint32 `json:"iteration"`
	Plaintext  string `json:"plaintext"`
	Header     string `json:"header"`
	Ciphertext string `json:"ciphertext"`
	Signature  string `json:"signature"`
	Envelope   string `json:"envelope"`
}

type skVectorFailure struct {
	Name     string `json:"name"`
	Comment  string `json:"comment"`
	Envelope string `json:"envelope"`
	// AppendZeros is a count of zero bytes to append to Envelope.
	AppendZeros int    `json:"append_zeros,omitempty"`
	Error       string `json:"error"`
}

// skVectorMessages are the iterations sealed with their plaintexts; the
// others (2 to 4) are sealed with skippedPlaintext and not given.
var skVectorMessages = map[uint32]string{0: "hello group", 1: "second message", 5: "sixth message, after four skipped"}

const skippedPlaintext = "skipped"

// skVectorInputs returns the fixed inputs: the chain key 00..1f, the
// signing seed 20..3f, the group ID a0..bf, epoch 3 and alice's device.
func skVectorInputs(tb testing.TB) (ck, seed, gid [32]byte, epoch uint64, device kez.PublicKey) {
	for i := range 32 {
		ck[i], seed[i], gid[i] = byte(i), byte(0x20+i), byte(0xa0+i)
	}
	d, err := kez.ParsePublicKey("UAQFA7JA2A3IMBKRP7E5K2FYON4PB732SATAO3KE4BIH2O6OPVPJENQ5")
	if err != nil {
		tb.Fatal(err)
	}
	return ck, seed, gid, 3, d
}

// sealSenderKeyVectors seals iterations 0 to 5 with k: the vectors'
// plaintexts, or skippedPlaintext.
func sealSenderKeyVectors(t *testing.T, k *SenderKey) [][]byte {
	var envs [][]byte
	for i := range uint32(6) {
		pt, ok := skVectorMessages[i]
		if !ok {
			pt = skippedPlaintext
		}
		env, err := k.Seal([]byte(pt))
		if err != nil {
			t.Fatal(err)
		}
		envs = append(envs, env)
	}
	return envs
}

func writeSenderKeyVectors(t *testing.T) {
	ck, seed, gid, epoch, device := skVectorInputs(t)
	k, err := NewSenderKey(bytes.NewReader(append(ck[:], seed[:]...)), gid, epoch, device)
	if err != nil {
		t.Fatal(err)
	}
	dist, _ := k.Distribution().MarshalBinary()
	vf := skVectorFile{
		Comment: []string{
			"Test vectors for KEZ sender keys and group envelopes (format v3), docs/spec/senderkeys.md §13.",
			"A sender key made from `chain_key` and `signing_seed` for `gid`, `epoch` and `device` seals iterations 0 to 5;",
			"`messages` are iterations 0, 1 and 5 (2 to 4 carry \"skipped\" and are not given). `chain` gives every",
			"intermediate key. A receiver key made from `distribution` (iteration 0) opens the messages in order;",
			"`sender_key_after` and `receiver_key_after` are the stored forms after that. Each fail_ envelope must be",
			"refused with `error` by a fresh receiver key from `distribution`.",
		},
		ChainKey: hex.EncodeToString(ck[:]), SigningSeed: hex.EncodeToString(seed[:]),
		SigningPublic: hex.EncodeToString(ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey)),
		GID:           hex.EncodeToString(gid[:]), Epoch: epoch, Device: device.String(), DeviceHex: hex.EncodeToString(device[:]),
		Distribution: hex.EncodeToString(dist),
	}
	c := ck
	for i := range uint32(6) {
		next, mk := kdfCK(&c)
		okm, _ := hkdf.Key(sha256.New, mk[:], nil, groupMessageInfo, groupAEADLen)
		vf.Chain = append(vf.Chain, skVectorChain{Iteration: i, ChainKey: hex.EncodeToString(c[:]), MessageKey: hex.EncodeToString(mk[:]),
			AEADKey: hex.EncodeToString(okm[:32]), Nonce: hex.EncodeToString(okm[32:])})
		c = next
	}
	envs := sealSenderKeyVectors(t, k)
	for i := range uint32(6) {
		pt, ok := skVectorMessages[i]
		if !ok {
			continue
		}
		env := envs[i]
		end := len(env) - sigLen
		vf.Messages = append(vf.Messages, skVectorMessage{Iteration: i, Plaintext: pt, Header: hex.EncodeToString(env[:GroupHeaderLen]),
			Ciphertext: hex.EncodeToString(env[GroupHeaderLen:end]), Signature: hex.EncodeToString(env[end:]), Envelope: hex.EncodeToString(env)})
	}
	d0, _ := ParseSenderKeyDistribution(dist)
	r := NewReceiverKey(d0)
	for _, m := range vf.Messages {
		env, _ := hex.DecodeString(m.Envelope)
		if _, err := r.Open(env); err != nil {
			t.Fatal(err)
		}
	}
	sk, _ := k.MarshalBinary()
	rk, _ := r.MarshalBinary()
	vf.SenderKey, vf.ReceiverKey = hex.EncodeToString(sk), hex.EncodeToString(rk)

	// The failures, each from the message of iteration 0 or 1.
	m0 := envs[0]
	mod := func(env []byte, f func(b []byte) []byte) string {
		return hex.EncodeToString(f(bytes.Clone(env)))
	}
	resign := func(b []byte) []byte { return signGroup(k.sign, b[:len(b)-sigLen]) }
	other, _ := NewSenderKey(bytes.NewReader(bytes.Repeat([]byte{7}, 64)), gid, epoch, device)
	forged, _ := other.Seal([]byte("hello group"))
	add := func(name, comment string, env string, e string) {
		vf.Failures = append(vf.Failures, skVectorFailure{Name: name, Comment: comment, Envelope: env, Error: e})
	}
	add("fail_magic", "magic KEZX", mod(m0, func(b []byte) []byte { b[3] = 'X'; return b }), "ErrMalformed")
	add("fail_version_2", "version byte 2 (a session envelope's)", mod(m0, func(b []byte) []byte { b[4] = 2; return b }), "ErrUnsupportedVersion")
	add("fail_type_2", "type 2", mod(m0, func(b []byte) []byte { b[5] = 2; return b }), "ErrUnsupportedVersion")
	add("fail_short", "161 bytes: no room for tag and signature", mod(m0, func(b []byte) []byte { return b[:groupMinLen-1] }), "ErrMalformed")
	vf.Failures = append(vf.Failures, skVectorFailure{Name: "fail_too_large", Comment: "message 0 with zeros appended: 65537 bytes",
		Envelope: hex.EncodeToString(m0), AppendZeros: MaxEnvelopeSize + 1 - len(m0), Error: "ErrTooLarge"})
	add("fail_iteration_max", "iteration 0xffffffff, never used", mod(m0, func(b []byte) []byte { copy(b[offGroupIteration:], []byte{0xff, 0xff, 0xff, 0xff}); return b }), "ErrMalformed")
	add("fail_wrong_gid", "another group ID", mod(m0, func(b []byte) []byte { b[offGroupGID] ^= 1; return resign(b) }), "ErrWrongGroup")
	add("fail_wrong_epoch", "epoch 4", mod(m0, func(b []byte) []byte { b[offGroupDevice-1] = 4; return resign(b) }), "ErrWrongGroup")
	add("fail_wrong_device", "another device", mod(m0, func(b []byte) []byte { b[offGroupDevice] ^= 1; return resign(b) }), "ErrWrongSender")
	add("fail_sig_bit", "one signature bit flipped", mod(m0, func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), "ErrBadSignature")
	add("fail_header_bit", "iteration changed without re-signing", mod(m0, func(b []byte) []byte { b[offGroupCT-1] = 1; return b }), "ErrBadSignature")
	add("fail_ciphertext_bit", "one ciphertext bit flipped without re-signing", mod(m0, func(b []byte) []byte { b[offGroupCT] ^= 1; return b }), "ErrBadSignature")
	add("fail_other_signing_key", "sealed by another sender key with the same group, epoch and device", hex.EncodeToString(forged), "ErrBadSignature")
	add("fail_ciphertext_resigned", "one ciphertext bit flipped and re-signed (only a holder of the signing key can)", mod(m0, func(b []byte) []byte { b[offGroupCT] ^= 1; return resign(b) }), "ErrDecrypt")
	add("fail_iteration_resigned", "message 1 relabelled as iteration 2 and re-signed: the wrong message key", mod(envs[1], func(b []byte) []byte { b[offGroupCT-1] = 2; return resign(b) }), "ErrDecrypt")
	add("fail_too_far_ahead", "iteration 2001 (re-signed): more than 2000 ahead of 0", mod(m0, func(b []byte) []byte { copy(b[offGroupIteration:], []byte{0, 0, 0x07, 0xd1}); return resign(b) }), "ErrTooFarAhead")

	out, err := json.MarshalIndent(vf, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(senderKeyVectorsFile, append(out, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

func loadSenderKeyVectors(tb testing.TB) *skVectorFile {
	tb.Helper()
	b, err := os.ReadFile(senderKeyVectorsFile)
	if err != nil {
		tb.Fatal(err)
	}
	var vf skVectorFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&vf); err != nil {
		tb.Fatalf("%s: %v", senderKeyVectorsFile, err)
	}
	return &vf
}

// skVectorErrors maps the error names of the vectors to the sentinels.
var skVectorErrors = map[string]error{
	"ErrMalformed": ErrMalformed, "ErrUnsupportedVersion": ErrUnsupportedVersion, "ErrTooLarge": ErrTooLarge,
	"ErrWrongGroup": ErrWrongGroup, "ErrWrongSender": ErrWrongSender, "ErrBadSignature": ErrBadSignature,
	"ErrDecrypt": ErrDecrypt, "ErrTooFarAhead": ErrTooFarAhead, "ErrReplay": ErrReplay, "ErrOlderThanKey": ErrOlderThanKey,
}

// TestSenderKeyVectors checks the vectors twice: from the primitives alone
// (HMAC, HKDF, ChaCha20-Poly1305, ed25519, as a reader of the spec would),
// and through the package's API, byte for byte.
func TestSenderKeyVectors(t *testing.T) {
	if *updateVectors {
		writeSenderKeyVectors(t)
	}
	vf := loadSenderKeyVectors(t)
	ck, seed, gid, epoch, device := skVectorInputs(t)
	if vf.ChainKey != hex.EncodeToString(ck[:]) || vf.SigningSeed != hex.EncodeToString(seed[:]) || vf.GID != hex.EncodeToString(gid[:]) ||
		vf.Epoch != epoch || vf.Device != device.String() || vf.DeviceHex != hex.EncodeToString(device[:]) {
		t.Fatal("the vectors' inputs are not the fixed ones")
	}
	signPub := ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey)
	if vf.SigningPublic != hex.EncodeToString(signPub) {
		t.Fatalf("signing_public: %x", signPub)
	}

	// From the primitives: the distribution's bytes, the chain, the envelopes.
	wantDist := []byte{1}
	wantDist = append(wantDist, gid[:]...)
	wantDist = append(wantDist, 0, 0, 0, 0, 0, 0, 0, 3)
	wantDist = append(wantDist, device[:]...)
	wantDist = append(wantDist, 0, 0, 0, 0)
	wantDist = append(wantDist, ck[:]...)
	wantDist = append(wantDist, signPub...)
	if got := unhex(t, "distribution", vf.Distribution); !bytes.Equal(got, wantDist) {
		t.Fatalf("distribution:\n%x\nwant\n%x", got, wantDist)
	}
	mac := func(key []byte, b byte) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte{b})
		return h.Sum(nil)
	}
	if len(vf.Chain) != 6 {
		t.Fatalf("%d chain steps, want 6", len(vf.Chain))
	}
	c := ck[:]
	for i, s := range vf.Chain {
		mk := mac(c, 1)
		okm, err := hkdf.Key(sha256.New, mk, nil, "kez/v3 sender key message", 44)
		if err != nil {
			t.Fatal(err)
		}
		if s.Iteration != uint32(i) || s.ChainKey != hex.EncodeToString(c) || s.MessageKey != hex.EncodeToString(mk) ||
			s.AEADKey != hex.EncodeToString(okm[:32]) || s.Nonce != hex.EncodeToString(okm[32:]) {
			t.Fatalf("chain step %d: %+v", i, s)
		}
		c = mac(c, 2)
	}
	if len(vf.Messages) != 3 {
		t.Fatalf("%d messages, want 3", len(vf.Messages))
	}
	for _, m := range vf.Messages {
		if skVectorMessages[m.Iteration] != m.Plaintext {
			t.Fatalf("message %d: plaintext %q", m.Iteration, m.Plaintext)
		}
		step := vf.Chain[m.Iteration]
		header := []byte("KEZM\x03\x01")
		header = append(header, gid[:]...)
		header = append(header, 0, 0, 0, 0, 0, 0, 0, 3)
		header = append(header, device[:]...)
		header = append(header, 0, 0, 0, byte(m.Iteration))
		aead, _ := chacha20poly1305.New(unhex(t, "aead key", step.AEADKey))
		ct := aead.Seal(nil, unhex(t, "nonce", step.Nonce), []byte(m.Plaintext), header)
		signed := append([]byte("KEZ\x00sig\x00v1\x00\x14kez/v3 group message"), header...)
		signed = append(signed, ct...)
		sig := ed25519.Sign(ed25519.NewKeyFromSeed(seed[:]), signed)
		env := append(append(bytes.Clone(header), ct...), sig...)
		if m.Header != hex.EncodeToString(header) || m.Ciphertext != hex.EncodeToString(ct) || m.Signature != hex.EncodeToString(sig) || m.Envelope != hex.EncodeToString(env) {
			t.Fatalf("message %d does not follow from the primitives", m.Iteration)
		}
	}

	// Through the API: seal byte for byte, open in order, the stored forms.
	k, err := NewSenderKey(bytes.NewReader(append(ck[:], seed[:]...)), gid, epoch, device)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := k.Distribution().MarshalBinary(); !bytes.Equal(d, wantDist) {
		t.Fatal("Distribution differs from the vector")
	}
	d0, err := ParseSenderKeyDistribution(wantDist)
	if err != nil {
		t.Fatal(err)
	}
	r := NewReceiverKey(d0)
	envs := sealSenderKeyVectors(t, k)
	mi := 0
	for i := range uint32(6) {
		pt, ok := skVectorMessages[i]
		if !ok {
			continue
		}
		env := envs[i]
		if m := vf.Messages[mi]; m.Envelope != hex.EncodeToString(env) {
			t.Fatalf("Seal of iteration %d:\n%x\nthe vector is\n%s", i, env, m.Envelope)
		}
		mi++
		got, err := r.Open(env)
		if err != nil || string(got) != pt {
			t.Fatalf("Open of iteration %d: %q, %v", i, got, err)
		}
	}
	if sk, _ := k.MarshalBinary(); hex.EncodeToString(sk) != vf.SenderKey {
		t.Fatalf("sender_key_after:\n%x", sk)
	}
	if rk, _ := r.MarshalBinary(); hex.EncodeToString(rk) != vf.ReceiverKey {
		t.Fatalf("receiver_key_after:\n%x", rk)
	}

	checkSenderKeyPage(t, vf)

	if len(vf.Failures) < 15 {
		t.Fatalf("only %d fail_ vectors", len(vf.Failures))
	}
	for _, f := range vf.Failures {
		t.Run(f.Name, func(t *testing.T) {
			want := skVectorErrors[f.Error]
			if want == nil {
				t.Fatalf("unknown error %q", f.Error)
			}
			env := append(unhex(t, f.Name, f.Envelope), make([]byte, f.AppendZeros)...)
			_, err := NewReceiverKey(d0).Open(env)
			if !errors.Is(err, want) {
				t.Fatalf("got %v, want %s", err, f.Error)
			}
		})
	}
}

const senderKeySpec = "../docs/spec/senderkeys.md"

var senderKeyBlock = regexp.MustCompile("(?s)(<!-- senderkey vectors -->\\s*```\\n)(.*?)(```)")

// checkSenderKeyPage checks that the page prints the vectors' values
// exactly (and rewrites them with -update-vectors).
func checkSenderKeyPage(t *testing.T, vf *skVectorFile) {
	spec, err := os.ReadFile(senderKeySpec)
	if err != nil {
		t.Fatal(err)
	}
	m := senderKeyBlock.FindSubmatchIndex(spec)
	if m == nil {
		t.Fatalf("%s has no senderkey vectors block", senderKeySpec)
	}
	want := renderSenderKeyVectors(t, vf)
	if *updateVectors {
		out := append(bytes.Clone(spec[:m[4]]), want...)
		out = append(out, spec[m[5]:]...)
		if err := os.WriteFile(senderKeySpec, out, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if got := string(spec[m[4]:m[5]]); got != want {
		t.Fatalf("%s §13 prints other values than the vectors; want\n%s", senderKeySpec, want)
	}
}

// renderSenderKeyVectors is the page's block: every input and
// intermediate key, and each message's parts.
func renderSenderKeyVectors(t *testing.T, vf *skVectorFile) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("chain_key       %s", vf.ChainKey)
	p("signing_seed    %s", vf.SigningSeed)
	p("signing_public  %s", vf.SigningPublic)
	p("gid             %s", vf.GID)
	p("epoch           %d", vf.Epoch)
	p("device          %s", vf.Device)
	p("                = %s", vf.DeviceHex)
	p("")
	d := vf.Distribution
	p("distribution (iteration 0, %d bytes)", len(d)/2)
	p("  version       %s", d[:2])
	p("  gid           %s", d[2:66])
	p("  epoch         %s", d[66:82])
	p("  device        %s", d[82:146])
	p("  iteration     %s", d[146:154])
	p("  chain_key     %s", d[154:218])
	p("  signing       %s", d[218:])
	for _, c := range vf.Chain {
		p("")
		p("iteration %d", c.Iteration)
		p("  CK            %s", c.ChainKey)
		p("  mk            %s", c.MessageKey)
		p("  aead key      %s", c.AEADKey)
		p("  nonce         %s", c.Nonce)
	}
	for _, m := range vf.Messages {
		h := m.Header
		p("")
		p("message %d: %q (%d bytes), envelope of %d bytes", m.Iteration, m.Plaintext, len(m.Plaintext), len(m.Envelope)/2)
		p("  header        %s %s %s", h[:8], h[8:10], h[10:12])
		p("                %s", h[12:76])
		p("                %s", h[76:92])
		p("                %s", h[92:156])
		p("                %s", h[156:])
		p("  ciphertext    %s", m.Ciphertext)
		p("  signature     %s", m.Signature[:64])
		p("                %s", m.Signature[64:])
	}
	return b.String()
}
