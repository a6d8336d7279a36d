package signal

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	ma "github.com/multiformats/go-multiaddr"
)

// The signalling vectors of docs/spec/signalling.md: owner is seed 0x01,
// requester (bob) 0x02, carol 0x03, a relay 0x05; nonce 00 01 … 0f; time 1767225600000 ms.

const signalVectorsPath = "testdata/signal_vectors.json"

type signalVector struct {
	Name string `json:"name"`
	Hex  string `json:"hex"`
	// Expect is "ok", "parse_error" or "verify_error" (parsed, but Verify
	// with the context below must fail).
	Expect  string   `json:"expect"`
	Addrs   []string `json:"addrs,omitempty"`   // ok answers: the addresses
	Comment string   `json:"comment,omitempty"` // what was changed
}

type signalVectors struct {
	Comment string `json:"comment"`
	// The context answers are verified in: the owner and requester keys,
	// the request's nonce and the verifier's clock.
	Owner     string         `json:"owner"`
	Requester string         `json:"requester"`
	Nonce     string         `json:"nonce"`
	NowMs     int64          `json:"now_ms"`
	Requests  []signalVector `json:"requests"`
	Answers   []signalVector `json:"answers"`
	// The holders messages of §6 (signal_holders_test.go).
	Holders holderVectors `json:"holders"`
	// The cookies of §7 (signal_cookie_test.go).
	Cookies cookieVectors `json:"cookies"`
}

const vectorTimeMs = 1767225600000

func vectorNonce() (n [locateNonceLen]byte) {
	for i := range n {
		n[i] = byte(i)
	}
	return n
}

func mustAddrs(t testing.TB, ss ...string) []ma.Multiaddr {
	var out []ma.Multiaddr
	for _, s := range ss {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

// buildSignalVectors makes the vectors from the code; ed25519 signatures
// are deterministic, so the bytes are stable.
func buildSignalVectors(t testing.TB) signalVectors {
	owner, bob, carol := testIdentity(t, seedOwner), testIdentity(t, seedBob), testIdentity(t, seedCarol)
	at := time.UnixMilli(vectorTimeMs).UTC()
	req := &LocateRequest{Owner: owner.PublicKey(), Requester: bob.PublicKey(), Nonce: vectorNonce(), Time: at}
	rb, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	v := signalVectors{
		Comment:   "KEZ signalling messages, see docs/spec/signalling.md. Identities are kez.FromSeed(64 bytes of V): owner 0x01, requester 0x02, carol 0x03. Answers are verified with owner, requester, nonce and now_ms below.",
		Owner:     owner.PublicKey().String(),
		Requester: bob.PublicKey().String(),
		Nonce:     hex.EncodeToString(req.Nonce[:]),
		NowMs:     vectorTimeMs + 1500,
	}
	mod := func(b []byte, f func([]byte) []byte) string { return hex.EncodeToString(f(bytes.Clone(b))) }
	v.Requests = []signalVector{
		{Name: "valid", Hex: hex.EncodeToString(rb), Expect: "ok"},
		{Name: "fail_truncated", Hex: mod(rb, func(b []byte) []byte { return b[:len(b)-1] }), Expect: "parse_error"},
		{Name: "fail_extended", Hex: mod(rb, func(b []byte) []byte { return append(b, 0) }), Expect: "parse_error"},
		{Name: "fail_magic", Hex: mod(rb, func(b []byte) []byte { b[0] = 'K'; return b }), Expect: "parse_error"},
		{Name: "fail_version", Hex: mod(rb, func(b []byte) []byte { b[4] = 2; return b }), Expect: "parse_error"},
		{Name: "fail_kind", Hex: mod(rb, func(b []byte) []byte { b[5] = kindAnswer; return b }), Expect: "parse_error"},
		{Name: "fail_time_range", Hex: mod(rb, func(b []byte) []byte { binary.BigEndian.PutUint64(b[86:], 1<<53); return b }), Expect: "parse_error"},
	}

	addrs := []string{"/ip4/192.0.2.1/tcp/4001", "/ip4/192.0.2.1/udp/4001/quic-v1", "/ip6/2001:db8::1/tcp/4001"}
	sign := func(signer kez.Signer, r *LocateRequest, as []ma.Multiaddr, now time.Time) []byte {
		b, err := SignLocateAnswer(signer, r, as, now)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	ab := sign(owner, req, mustAddrs(t, addrs...), at.Add(time.Second))
	// raw builds an answer head+addresses by hand (for what the encoder
	// refuses to make) and signs it properly.
	raw := func(n int, addrBytes ...[]byte) []byte {
		b := appendHead(nil, kindAnswer, req.Owner, req.Requester, req.Nonce, at)
		b = append(b, byte(n))
		for _, a := range addrBytes {
			b = append(b, byte(len(a)))
			b = append(b, a...)
		}
		sig, err := owner.Sign(kez.ContextPeerAddrs, b)
		if err != nil {
			t.Fatal(err)
		}
		return append(b, sig...)
	}
	one := mustAddrs(t, addrs[0])[0].Bytes()
	p2p := mustAddrs(t, "/ip4/192.0.2.1/tcp/4001/p2p/"+owner.PublicKey().PeerID().String())[0].Bytes()
	nonMinimal := append([]byte{0x84, 0x00}, one[1:]...) // /ip4 as a two-byte varint
	var seventeen [][]byte
	for i := 0; i < MaxLocateAddrs+1; i++ {
		seventeen = append(seventeen, one)
	}
	// Circuit addresses: through a relay whose key is seed 0x05.
	relay := testIdentity(t, seedRelay).PublicKey().PeerID().String()
	circuit := "/ip4/198.51.100.7/udp/4002/quic-v1/p2p/" + relay + "/p2p-circuit"
	circuitAddrs := []string{addrs[0], circuit}
	notLast := mustAddrs(t, circuit+"/ip4/192.0.2.1/tcp/4001")[0].Bytes()
	twoCircuits := mustAddrs(t, circuit+"/p2p/"+relay+"/p2p-circuit")[0].Bytes()
	other := *req
	other.Requester = carol.PublicKey()
	wrongNonce := *req
	wrongNonce.Nonce[0] ^= 1
	mallory := testIdentity(t, seedDave)
	v.Answers = []signalVector{
		{Name: "valid", Hex: hex.EncodeToString(ab), Expect: "ok", Addrs: addrs},
		{Name: "valid_one_addr", Hex: hex.EncodeToString(raw(1, one)), Expect: "ok", Addrs: addrs[:1]},
		{Name: "valid_circuit", Hex: hex.EncodeToString(sign(owner, req, mustAddrs(t, circuitAddrs...), at.Add(time.Second))), Expect: "ok", Addrs: circuitAddrs, Comment: "a direct address and a circuit address through the relay 0x05"},
		{Name: "fail_truncated", Hex: mod(ab, func(b []byte) []byte { return b[:len(b)-1] }), Expect: "parse_error"},
		{Name: "fail_extended", Hex: mod(ab, func(b []byte) []byte { return append(b, 0) }), Expect: "parse_error"},
		{Name: "fail_kind_request", Hex: mod(ab, func(b []byte) []byte { b[5] = kindLocate; return b }), Expect: "parse_error"},
		{Name: "fail_no_addrs", Hex: hex.EncodeToString(raw(0)), Expect: "parse_error"},
		{Name: "fail_too_many_addrs", Hex: hex.EncodeToString(raw(MaxLocateAddrs+1, seventeen...)), Expect: "parse_error"},
		{Name: "fail_addr_names_peer", Hex: hex.EncodeToString(raw(1, p2p)), Expect: "parse_error"},
		{Name: "fail_addr_not_canonical", Hex: hex.EncodeToString(raw(1, nonMinimal)), Expect: "parse_error"},
		{Name: "fail_addr_garbage", Hex: hex.EncodeToString(raw(1, []byte{0xff, 0xff, 0xff})), Expect: "parse_error"},
		{Name: "fail_addr_count_mismatch", Hex: hex.EncodeToString(raw(2, one)), Expect: "parse_error"},
		{Name: "fail_circuit_not_last", Hex: hex.EncodeToString(raw(1, notLast)), Expect: "parse_error", Comment: "/p2p-circuit followed by another address"},
		{Name: "fail_two_circuits", Hex: hex.EncodeToString(raw(1, twoCircuits)), Expect: "parse_error", Comment: "a circuit through a circuit"},
		{Name: "fail_bad_signature", Hex: mod(ab, func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), Expect: "verify_error", Comment: "one bit of the signature flipped"},
		{Name: "fail_tampered_addr", Hex: mod(ab, func(b []byte) []byte { b[locateHeadLen+1+1+4] ^= 1; return b }), Expect: "verify_error", Comment: "the first address's IP changed after signing"},
		{Name: "fail_replayed_nonce", Hex: hex.EncodeToString(sign(owner, &wrongNonce, mustAddrs(t, addrs...), at)), Expect: "verify_error", Comment: "a valid answer to another request"},
		{Name: "fail_redirected", Hex: hex.EncodeToString(sign(owner, &other, mustAddrs(t, addrs...), at)), Expect: "verify_error", Comment: "a valid answer to carol's request with the same nonce"},
		{Name: "fail_signed_by_other_key", Hex: mod(sign(mallory, &LocateRequest{Owner: mallory.PublicKey(), Requester: req.Requester, Nonce: req.Nonce, Time: at}, mustAddrs(t, addrs...), at), func(b []byte) []byte {
			copy(b[6:38], req.Owner[:])
			return b
		}), Expect: "verify_error", Comment: "the owner field says owner, the signature is another key's"},
		{Name: "fail_stale", Hex: hex.EncodeToString(sign(owner, req, mustAddrs(t, addrs...), at.Add(-MaxSignalSkew-time.Second))), Expect: "verify_error", Comment: "signed 5 min 2.5 s before now"},
		{Name: "fail_future", Hex: hex.EncodeToString(sign(owner, req, mustAddrs(t, addrs...), at.Add(MaxSignalSkew+2*time.Second))), Expect: "verify_error", Comment: "signed 5 min 0.5 s after now"},
	}
	v.Holders = buildHolderVectors(t, owner, bob, req.Nonce, at)
	v.Cookies = buildCookieVectors(t, req)
	return v
}

func loadSignalVectors(t testing.TB) signalVectors {
	b, err := os.ReadFile(signalVectorsPath)
	if err != nil {
		t.Fatal(err)
	}
	var v signalVectors
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestSignalVectorsUpToDate(t *testing.T) {
	want := buildSignalVectors(t)
	if *update {
		b, _ := json.MarshalIndent(want, "", "  ")
		if err := os.WriteFile(signalVectorsPath, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got := loadSignalVectors(t)
	wb, _ := json.Marshal(want)
	gb, _ := json.Marshal(got)
	if !bytes.Equal(wb, gb) {
		t.Fatalf("%s is not what the code makes; run go test -run TestSignalVectorsUpToDate -update", signalVectorsPath)
	}
}

func TestSignalVectors(t *testing.T) {
	v := loadSignalVectors(t)
	owner, err := kez.ParsePublicKey(v.Owner)
	if err != nil {
		t.Fatal(err)
	}
	requester, err := kez.ParsePublicKey(v.Requester)
	if err != nil {
		t.Fatal(err)
	}
	var nonce [locateNonceLen]byte
	hex.Decode(nonce[:], []byte(v.Nonce))
	now := time.UnixMilli(v.NowMs)
	for _, tv := range v.Requests {
		b, _ := hex.DecodeString(tv.Hex)
		r, err := ParseLocateRequest(b)
		switch tv.Expect {
		case "ok":
			if err != nil {
				t.Errorf("request %s: %v", tv.Name, err)
				continue
			}
			if r.Owner != owner || r.Requester != requester || r.Nonce != nonce || r.Time.UnixMilli() != vectorTimeMs {
				t.Errorf("request %s: decoded %+v", tv.Name, r)
			}
			if again, _ := r.Marshal(); !bytes.Equal(again, b) {
				t.Errorf("request %s does not re-encode to itself", tv.Name)
			}
		default:
			if !errors.Is(err, ErrSignal) {
				t.Errorf("request %s: got %v, want ErrSignal", tv.Name, err)
			}
		}
	}
	for _, tv := range v.Answers {
		b, _ := hex.DecodeString(tv.Hex)
		a, err := ParseLocateAnswer(b)
		if tv.Expect == "parse_error" {
			if !errors.Is(err, ErrSignal) {
				t.Errorf("answer %s: parse gave %v, want ErrSignal", tv.Name, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("answer %s: %v", tv.Name, err)
			continue
		}
		err = a.Verify(owner, requester, nonce, now)
		if tv.Expect == "verify_error" {
			if !errors.Is(err, ErrSignal) {
				t.Errorf("answer %s: Verify gave %v, want ErrSignal", tv.Name, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("answer %s: %v", tv.Name, err)
			continue
		}
		var got []string
		for _, x := range a.Addrs {
			got = append(got, x.String())
		}
		if len(got) != len(tv.Addrs) {
			t.Errorf("answer %s: addresses %v, want %v", tv.Name, got, tv.Addrs)
			continue
		}
		for i := range got {
			if got[i] != tv.Addrs[i] {
				t.Errorf("answer %s: addresses %v, want %v", tv.Name, got, tv.Addrs)
			}
		}
	}
}

// A bad signature is also kez.ErrBadSignature, so callers can tell a
// forgery from a mix-up.
func TestLocateAnswerForgeryIsBadSignature(t *testing.T) {
	v := loadSignalVectors(t)
	for _, tv := range v.Answers {
		if tv.Name != "fail_bad_signature" {
			continue
		}
		b, _ := hex.DecodeString(tv.Hex)
		a, err := ParseLocateAnswer(b)
		if err != nil {
			t.Fatal(err)
		}
		owner, _ := kez.ParsePublicKey(v.Owner)
		req, _ := kez.ParsePublicKey(v.Requester)
		if err := a.Verify(owner, req, vectorNonce(), time.UnixMilli(v.NowMs)); !errors.Is(err, kez.ErrBadSignature) {
			t.Fatalf("got %v, want kez.ErrBadSignature", err)
		}
		return
	}
	t.Fatal("no fail_bad_signature vector")
}

func TestSignLocateAnswerRefuses(t *testing.T) {
	owner, bob := testIdentity(t, seedOwner), testIdentity(t, seedBob)
	req := &LocateRequest{Owner: owner.PublicKey(), Requester: bob.PublicKey(), Time: time.Now()}
	good := mustAddrs(t, "/ip4/127.0.0.1/tcp/1")
	if _, err := SignLocateAnswer(bob, req, good, time.Now()); err == nil {
		t.Error("signed an answer for another owner's key")
	}
	if _, err := SignLocateAnswer(owner, req, nil, time.Now()); err == nil {
		t.Error("signed an answer without addresses")
	}
	withPeer := mustAddrs(t, "/ip4/127.0.0.1/tcp/1/p2p/"+owner.PublicKey().PeerID().String())
	if _, err := SignLocateAnswer(owner, req, withPeer, time.Now()); !errors.Is(err, ErrSignal) {
		t.Errorf("signed an address naming a peer: %v", err)
	}
	if _, err := SignLocateAnswer(owner, req, good, time.UnixMilli(-1)); err == nil {
		t.Error("signed a time before 1970")
	}
}

func TestAnnounceAddrs(t *testing.T) {
	circuit := "/ip4/198.51.100.7/tcp/4002/p2p/" + testIdentity(t, seedRelay).PublicKey().PeerID().String() + "/p2p-circuit"
	in := mustAddrs(t, circuit, "/ip4/127.0.0.1/tcp/1", "/ip4/0.0.0.0/tcp/2", "/ip4/192.168.1.2/tcp/3", "/ip4/8.8.8.8/tcp/4",
		"/ip4/127.0.0.1/tcp/1", "/ip4/127.0.0.1/tcp/5/p2p/"+testIdentity(t, 1).PublicKey().PeerID().String())
	var got []string
	for _, a := range AnnounceAddrs(in) {
		got = append(got, a.String())
	}
	want := []string{"/ip4/8.8.8.8/tcp/4", "/ip4/192.168.1.2/tcp/3", "/ip4/127.0.0.1/tcp/1", circuit}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	var many []ma.Multiaddr
	for i := 0; i < 40; i++ {
		many = append(many, mustAddrs(t, "/ip4/10.0.0.1/tcp/"+string(rune('0'+i%10))+string(rune('0'+i/10)))...)
	}
	if n := len(AnnounceAddrs(many)); n != MaxLocateAddrs {
		t.Errorf("announced %d addresses, want %d", n, MaxLocateAddrs)
	}
}

// FuzzParseLocateAnswer checks the answer decoder on untrusted bytes:
// never a panic, and everything it accepts is within the limits and
// re-encodes to the same bytes.
func FuzzParseLocateAnswer(f *testing.F) {
	v := loadSignalVectors(f)
	for _, tv := range v.Answers {
		b, _ := hex.DecodeString(tv.Hex)
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte(signalMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ParseLocateAnswer(b)
		if err != nil {
			if !errors.Is(err, ErrSignal) {
				t.Fatalf("error %v does not wrap ErrSignal", err)
			}
			return
		}
		if len(a.Addrs) == 0 || len(a.Addrs) > MaxLocateAddrs || len(b) > MaxLocateAnswerSize {
			t.Fatalf("accepted %d addresses in %d bytes", len(a.Addrs), len(b))
		}
		re := appendHead(nil, kindAnswer, a.Owner, a.Requester, a.Nonce, a.Time)
		re = append(re, byte(len(a.Addrs)))
		for _, x := range a.Addrs {
			re = append(re, byte(len(x.Bytes())))
			re = append(re, x.Bytes()...)
		}
		re = append(re, a.Signature...)
		if !bytes.Equal(re, b) {
			t.Fatalf("accepted input does not re-encode to itself:\n%x\n%x", b, re)
		}
		// Verification must not panic either.
		a.Verify(a.Owner, a.Requester, a.Nonce, a.Time)
	})
}

// FuzzParseLocateRequest checks the request decoder on untrusted bytes.
func FuzzParseLocateRequest(f *testing.F) {
	v := loadSignalVectors(f)
	for _, tv := range append(v.Requests, v.Cookies.Requests...) {
		b, _ := hex.DecodeString(tv.Hex)
		f.Add(b)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseLocateRequest(b)
		if err != nil {
			if !errors.Is(err, ErrSignal) {
				t.Fatalf("error %v does not wrap ErrSignal", err)
			}
			return
		}
		re, err := r.Marshal()
		if err != nil || !bytes.Equal(re, b) {
			t.Fatalf("accepted input does not re-encode to itself (%v)", err)
		}
	})
}
