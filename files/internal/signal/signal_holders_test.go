package signal

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/files/format"
	"github.com/kez-lat/kez-chat/kez"
	mh "github.com/multiformats/go-multihash"
)

// The holders vectors of docs/spec/signalling.md §6: the owner's serving
// device is 0x01, the fetcher 0x02 (bob), the holders carol 0x03 and
// dave 0x04; the blob is the 1-byte pattern blob of docs/spec/blobs.md
// (byte 0), and the other blob the 2-byte one.

type holderVectors struct {
	Comment string `json:"comment"`
	CID     string `json:"cid"`
	// Haves are checked as the owner does: parsed, then Verify(now_ms,
	// 5 min).
	Haves    []signalVector `json:"haves"`
	Requests []signalVector `json:"requests"`
	// Answers are verified with the file's owner, requester, nonce and
	// now_ms; the records of an ok answer then go through CheckHolder
	// for cid, and Holders lists the keys of those that pass.
	Answers []holderAnswerVector `json:"answers"`
}

type holderAnswerVector struct {
	signalVector
	Holders []string `json:"holders,omitempty"`
}

func blobCID(t testing.TB, n int) cid.Cid {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	tr, err := format.BuildTree(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return tr.CID()
}

func buildHolderVectors(t testing.TB, owner, bob *kez.Identity, nonce [locateNonceLen]byte, at time.Time) holderVectors {
	carol, dave := testIdentity(t, seedCarol), testIdentity(t, seedDave)
	c, other := blobCID(t, 1), blobCID(t, 2)
	hexs := func(b []byte) string { return hex.EncodeToString(b) }
	mod := func(b []byte, f func([]byte) []byte) string { return hexs(f(bytes.Clone(b))) }
	addrs := []string{"/ip4/198.51.100.7/tcp/4001", "/ip4/198.51.100.7/udp/4001/quic-v1"}
	have := func(signer *kez.Identity, ownerKey kez.PublicKey, c cid.Cid, when time.Time, as ...string) []byte {
		h := &Have{Owner: ownerKey, Holder: signer.PublicKey(), Nonce: nonce, Time: when, CID: c, Addrs: mustAddrs(t, as...)}
		b, err := SignHave(signer, h)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	hb := have(carol, owner.PublicKey(), c, at, addrs...)
	// rawHave builds a have from parts by hand (for what SignHave refuses
	// to make) and signs it with carol's key.
	rawHave := func(cidBytes []byte, n int, as ...[]byte) []byte {
		b := appendHead(nil, kindHave, owner.PublicKey(), carol.PublicKey(), nonce, at)
		b = append(b, byte(len(cidBytes)))
		b = append(b, cidBytes...)
		b = append(b, byte(n))
		for _, a := range as {
			b = append(b, byte(len(a)))
			b = append(b, a...)
		}
		sig, err := carol.Sign(ContextHolder, b)
		if err != nil {
			t.Fatal(err)
		}
		return append(b, sig...)
	}
	one := mustAddrs(t, addrs[0])[0].Bytes()
	circuit := "/ip4/198.51.100.7/udp/4002/quic-v1/p2p/" + testIdentity(t, seedRelay).PublicKey().PeerID().String() + "/p2p-circuit"
	notLast := mustAddrs(t, circuit+"/ip4/192.0.2.1/tcp/4001")[0].Bytes()
	p2p := mustAddrs(t, addrs[0]+"/p2p/"+carol.PublicKey().PeerID().String())[0].Bytes()
	rawCID, _ := mh.Sum([]byte("x"), mh.SHA2_256, -1)
	notKEZ := cid.NewCidV1(cid.Raw, rawCID).Bytes()
	seventeen := slices.Repeat([][]byte{one}, MaxHaveAddrs+1)
	otherCID := mod(hb, func(b []byte) []byte { copy(b[locateHeadLen+1:], other.Bytes()); return b })
	forged := have(dave, owner.PublicKey(), c, at, addrs...)
	ck := carol.PublicKey()
	copy(forged[6+32:], ck[:])

	v := holderVectors{
		Comment: "Holders (signalling.md §6): haves by carol 0x03 and dave 0x04 for the owner 0x01's blob cid, asked for by the requester 0x02.",
		CID:     c.String(),
	}
	v.Haves = []signalVector{
		{Name: "valid", Hex: hexs(hb), Expect: "ok", Addrs: addrs},
		{Name: "valid_circuit", Hex: hexs(have(carol, owner.PublicKey(), c, at, circuit)), Expect: "ok", Addrs: []string{circuit}, Comment: "a circuit address through the relay 0x05"},
		{Name: "fail_truncated", Hex: mod(hb, func(b []byte) []byte { return b[:len(b)-1] }), Expect: "parse_error"},
		{Name: "fail_extended", Hex: mod(hb, func(b []byte) []byte { return append(b, 0) }), Expect: "parse_error"},
		{Name: "fail_kind", Hex: mod(hb, func(b []byte) []byte { b[5] = kindLocate; return b }), Expect: "parse_error"},
		{Name: "fail_cid_empty", Hex: hexs(rawHave(nil, 1, one)), Expect: "parse_error"},
		{Name: "fail_cid_garbage", Hex: hexs(rawHave([]byte{0xff, 0xff, 0xff}, 1, one)), Expect: "parse_error"},
		{Name: "fail_cid_not_kez", Hex: hexs(rawHave(notKEZ, 1, one)), Expect: "parse_error", Comment: "a raw SHA-256 CID, not a KEZ blob CID"},
		{Name: "fail_no_addrs", Hex: hexs(rawHave(c.Bytes(), 0)), Expect: "parse_error"},
		{Name: "fail_too_many_addrs", Hex: hexs(rawHave(c.Bytes(), MaxHaveAddrs+1, seventeen...)), Expect: "parse_error"},
		{Name: "fail_addr_names_peer", Hex: hexs(rawHave(c.Bytes(), 1, p2p)), Expect: "parse_error"},
		{Name: "fail_addr_count_mismatch", Hex: hexs(rawHave(c.Bytes(), 2, one)), Expect: "parse_error"},
		{Name: "fail_circuit_not_last", Hex: hexs(rawHave(c.Bytes(), 1, notLast)), Expect: "parse_error"},
		{Name: "fail_bad_signature", Hex: mod(hb, func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), Expect: "verify_error"},
		{Name: "fail_tampered_cid", Hex: otherCID, Expect: "verify_error", Comment: "the CID replaced by another blob's after signing"},
		{Name: "fail_signed_by_other_key", Hex: hexs(forged), Expect: "verify_error", Comment: "the holder field says carol, dave signed"},
		{Name: "fail_stale", Hex: hexs(have(carol, owner.PublicKey(), c, at.Add(-MaxSignalSkew), addrs...)), Expect: "verify_error", Comment: "signed 5 min 1.5 s before now"},
		{Name: "fail_future", Hex: hexs(have(carol, owner.PublicKey(), c, at.Add(MaxSignalSkew+2*time.Second), addrs...)), Expect: "verify_error", Comment: "signed 5 min 0.5 s after now"},
	}

	req := &HoldersRequest{Owner: owner.PublicKey(), Requester: bob.PublicKey(), Nonce: nonce, Time: at, CID: c}
	rb, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	v.Requests = []signalVector{
		{Name: "valid", Hex: hexs(rb), Expect: "ok"},
		{Name: "fail_truncated", Hex: mod(rb, func(b []byte) []byte { return b[:len(b)-1] }), Expect: "parse_error"},
		{Name: "fail_extended", Hex: mod(rb, func(b []byte) []byte { return append(b, 0) }), Expect: "parse_error"},
		{Name: "fail_kind", Hex: mod(rb, func(b []byte) []byte { b[5] = kindLocate; return b }), Expect: "parse_error"},
		{Name: "fail_no_cid", Hex: hexs(rb[:locateHeadLen]), Expect: "parse_error"},
	}

	answer := func(signer *kez.Identity, r *HoldersRequest, when time.Time, haves ...[]byte) []byte {
		r2 := *r
		r2.Owner = signer.PublicKey()
		b, err := SignHoldersAnswer(signer, &r2, haves, when)
		if err != nil {
			t.Fatal(err)
		}
		copy(b[6:38], r.Owner[:])
		return b
	}
	// rawAnswer frames records by hand (for what SignHoldersAnswer
	// refuses) and signs with the owner's key.
	rawAnswer := func(n int, recs ...[]byte) []byte {
		b := appendHead(nil, kindHoldersAnswer, req.Owner, req.Requester, req.Nonce, at)
		b = append(b, byte(n))
		for _, r := range recs {
			b = binary.BigEndian.AppendUint16(b, uint16(len(r)))
			b = append(b, r...)
		}
		sig, err := owner.Sign(ContextHolders, b)
		if err != nil {
			t.Fatal(err)
		}
		return append(b, sig...)
	}
	db := have(dave, owner.PublicKey(), c, at.Add(-20*time.Minute), addrs[1])
	ab := answer(owner, req, at.Add(time.Second), hb, db)
	ignored := answer(owner, req, at, hb,
		have(dave, owner.PublicKey(), other, at, addrs...),                                      // another blob
		have(owner, owner.PublicKey(), c, at, addrs...),                                         // the owner's own device
		have(dave, carol.PublicKey(), c, at, addrs...),                                          // made for another owner
		mod2(hb, func(b []byte) { b[len(b)-1] ^= 1 }),                                           // a bad signature
		have(bob, owner.PublicKey(), c, at, addrs...),                                           // the fetcher itself
		have(dave, owner.PublicKey(), c, at.Add(-HaveLife-MaxSignalSkew-time.Second), addrs...), // too old
		hb, // carol twice
	)
	var wrongNonce, redirected = *req, *req
	wrongNonce.Nonce[0] ^= 1
	redirected.Requester = carol.PublicKey()
	mallory := testIdentity(t, 0x06)
	ok := func(name, h string, holders ...*kez.Identity) holderAnswerVector {
		var ks []string
		for _, id := range holders {
			ks = append(ks, id.PublicKey().String())
		}
		return holderAnswerVector{signalVector: signalVector{Name: name, Hex: h, Expect: "ok"}, Holders: ks}
	}
	bad := func(name, h, expect, comment string) holderAnswerVector {
		return holderAnswerVector{signalVector: signalVector{Name: name, Hex: h, Expect: expect, Comment: comment}}
	}
	v.Answers = []holderAnswerVector{
		ok("valid", hexs(ab), carol, dave),
		ok("valid_empty", hexs(answer(owner, req, at))),
		ok("valid_records_ignored", hexs(ignored), carol),
		bad("fail_truncated", mod(ab, func(b []byte) []byte { return b[:len(b)-1] }), "parse_error", ""),
		bad("fail_extended", mod(ab, func(b []byte) []byte { return append(b, 0) }), "parse_error", ""),
		bad("fail_kind", mod(ab, func(b []byte) []byte { b[5] = kindHoldersRequest; return b }), "parse_error", ""),
		bad("fail_too_many_records", hexs(rawAnswer(MaxHolders+1, slices.Repeat([][]byte{hb}, MaxHolders+1)...)), "parse_error", "9 records"),
		bad("fail_record_malformed", hexs(rawAnswer(1, hb[:len(hb)-1])), "parse_error", "a record one byte short, framed as such"),
		bad("fail_record_past_end", hexs(rawAnswer(2, hb)), "parse_error", "two records announced, one present"),
		bad("fail_bad_signature", mod(ab, func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), "verify_error", ""),
		bad("fail_signed_by_other_key", hexs(answer(mallory, req, at, hb)), "verify_error", "the owner field says owner, 0x06 signed"),
		bad("fail_replayed_nonce", hexs(answer(owner, &wrongNonce, at, hb)), "verify_error", "an answer to another request"),
		bad("fail_redirected", hexs(answer(owner, &redirected, at, hb)), "verify_error", "an answer to carol's request with the same nonce"),
		bad("fail_stale", hexs(answer(owner, req, at.Add(-MaxSignalSkew), hb)), "verify_error", "signed 5 min 1.5 s before now"),
	}
	return v
}

// mod2 returns a changed copy of b.
func mod2(b []byte, f func([]byte)) []byte {
	b = bytes.Clone(b)
	f(b)
	return b
}

func TestHolderVectors(t *testing.T) {
	all := loadSignalVectors(t)
	v := all.Holders
	owner, _ := kez.ParsePublicKey(all.Owner)
	requester, _ := kez.ParsePublicKey(all.Requester)
	c, err := format.ParseCID(v.CID)
	if err != nil {
		t.Fatal(err)
	}
	nonce := vectorNonce()
	now := time.UnixMilli(all.NowMs)
	if len(v.Haves) == 0 || len(v.Requests) == 0 || len(v.Answers) == 0 {
		t.Fatal("no holders vectors")
	}
	for _, tv := range v.Haves {
		b, _ := hex.DecodeString(tv.Hex)
		h, err := ParseHave(b)
		if err == nil {
			err = h.Verify(now, MaxSignalSkew)
		}
		if !checkExpect(t, "have "+tv.Name, tv.Expect, err, h != nil) {
			continue
		}
		if !h.CID.Equals(c) || h.Owner != owner || !bytes.Equal(h.Bytes(), b) || fmt.Sprint(h.Addrs) != fmt.Sprint(mustAddrs(t, tv.Addrs...)) {
			t.Errorf("have %s decoded as %+v", tv.Name, h)
		}
	}
	for _, tv := range v.Requests {
		b, _ := hex.DecodeString(tv.Hex)
		r, err := ParseHoldersRequest(b)
		if !checkExpect(t, "request "+tv.Name, tv.Expect, err, r != nil) {
			continue
		}
		if again, _ := r.Marshal(); !bytes.Equal(again, b) || !r.CID.Equals(c) || r.Requester != requester {
			t.Errorf("request %s decoded as %+v", tv.Name, r)
		}
	}
	for _, tv := range v.Answers {
		b, _ := hex.DecodeString(tv.Hex)
		a, err := ParseHoldersAnswer(b)
		if err == nil {
			err = a.Verify(owner, requester, nonce, now)
		}
		if !checkExpect(t, "answer "+tv.Name, tv.Expect, err, a != nil) {
			continue
		}
		var got []string
		seen := map[kez.PublicKey]bool{}
		for _, h := range a.Records {
			if !seen[h.Holder] && CheckHolder(h, owner, requester, c, now, HaveLife+MaxSignalSkew) == nil {
				seen[h.Holder] = true
				got = append(got, h.Holder.String())
			}
		}
		if !slices.Equal(got, tv.Holders) {
			t.Errorf("answer %s: holders %v, want %v", tv.Name, got, tv.Holders)
		}
	}
}

// checkExpect checks err against a vector's expectation and reports
// whether the vector is an ok one to look into further.
func checkExpect(t *testing.T, name, expect string, err error, parsed bool) bool {
	t.Helper()
	switch expect {
	case "ok":
		if err != nil {
			t.Errorf("%s: %v", name, err)
			return false
		}
		return true
	case "parse_error":
		if parsed || !errors.Is(err, ErrSignal) {
			t.Errorf("%s: parsed (%v), want a parse error", name, err)
		}
	case "verify_error":
		if !parsed || !errors.Is(err, ErrSignal) {
			t.Errorf("%s: got %v (parsed %v), want a verification error", name, err, parsed)
		}
	default:
		t.Errorf("%s: unknown expectation %q", name, expect)
	}
	return false
}

// TestHolderSpecMatchesVectors keeps docs/spec/signalling.md §6 in step
// with the code: its contexts, sizes, kinds and every vector's name.
func TestHolderSpecMatchesVectors(t *testing.T) {
	spec, err := os.ReadFile("../../../docs/spec/signalling.md")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(spec), "## 6. Holders")
	if !ok {
		t.Fatal("docs/spec/signalling.md has no §6 Holders")
	}
	v := loadSignalVectors(t).Holders
	claims := []string{ContextHolder, ContextHolders, v.CID,
		fmt.Sprintf("%d", MaxHaveSize), fmt.Sprintf("%d", HoldersRequestSize), fmt.Sprintf("%d", MaxHoldersAnswerSize),
		"3 = have", "4 = holders request", "5 = holders answer", "0..8", "30 minutes", "10 minutes", "24 hours"}
	for _, tv := range slices.Concat(v.Haves, v.Requests) {
		if !strings.Contains(string(spec), "`"+tv.Name+"`") {
			t.Errorf("docs/spec/signalling.md does not list the vector %q", tv.Name)
		}
	}
	for _, tv := range v.Answers {
		if !strings.Contains(string(spec), "`"+tv.Name+"`") {
			t.Errorf("docs/spec/signalling.md does not list the vector %q", tv.Name)
		}
	}
	hb, _ := hex.DecodeString(v.Haves[0].Hex)
	c, _ := format.ParseCID(v.CID)
	claims = append(claims, hex.EncodeToString(hb[locateHeadLen:locateHeadLen+1+len(c.Bytes())]))
	for _, c := range claims {
		if !strings.Contains(sec, c) {
			t.Errorf("docs/spec/signalling.md §6 does not say %q", c)
		}
	}
}

func TestSignHaveRefuses(t *testing.T) {
	owner, carol := testIdentity(t, seedOwner), testIdentity(t, seedCarol)
	c := blobCID(t, 1)
	good := mustAddrs(t, "/ip4/127.0.0.1/tcp/1")
	base := Have{Owner: owner.PublicKey(), Holder: carol.PublicKey(), Time: time.Now(), CID: c, Addrs: good}
	for name, f := range map[string]func(h *Have){
		"another holder": func(h *Have) { h.Holder = owner.PublicKey() },
		"no address":     func(h *Have) { h.Addrs = nil },
		"17 addresses":   func(h *Have) { h.Addrs = slices.Repeat(good, MaxHaveAddrs+1) },
		"a /p2p address": func(h *Have) { h.Addrs = mustAddrs(t, "/ip4/127.0.0.1/tcp/1/p2p/"+owner.PublicKey().PeerID().String()) },
		"no CID":         func(h *Have) { h.CID = cid.Undef },
		"before 1970":    func(h *Have) { h.Time = time.UnixMilli(-1) },
	} {
		h := base
		f(&h)
		if _, err := SignHave(carol, &h); err == nil {
			t.Errorf("%s: signed", name)
		}
	}
	req := &HoldersRequest{Owner: owner.PublicKey(), Requester: carol.PublicKey(), Time: time.Now(), CID: c}
	if _, err := SignHoldersAnswer(carol, req, nil, time.Now()); err == nil {
		t.Error("signed a holders answer for another owner")
	}
	if _, err := SignHoldersAnswer(owner, req, make([][]byte, MaxHolders+1), time.Now()); err == nil {
		t.Error("signed 9 records")
	}
}

// The three decoders on untrusted bytes: never a panic, errors wrap
// ErrSignal, sizes within the limits, and what they accept re-encodes to
// the same bytes.

func FuzzParseHave(f *testing.F) {
	for _, tv := range loadSignalVectors(f).Holders.Haves {
		b, _ := hex.DecodeString(tv.Hex)
		f.Add(b)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHave(b)
		if err != nil {
			if !errors.Is(err, ErrSignal) {
				t.Fatalf("error %v does not wrap ErrSignal", err)
			}
			return
		}
		if len(h.Addrs) == 0 || len(h.Addrs) > MaxHaveAddrs || len(b) > MaxHaveSize || format.CheckCID(h.CID) != nil {
			t.Fatalf("accepted %d addresses, CID %v in %d bytes", len(h.Addrs), h.CID, len(b))
		}
		re := appendHead(nil, kindHave, h.Owner, h.Holder, h.Nonce, h.Time)
		re, _ = appendCID(re, h.CID)
		re = append(re, byte(len(h.Addrs)))
		for _, a := range h.Addrs {
			re = append(re, byte(len(a.Bytes())))
			re = append(re, a.Bytes()...)
		}
		if re = append(re, h.Signature...); !bytes.Equal(re, b) {
			t.Fatalf("accepted input does not re-encode to itself:\n%x\n%x", b, re)
		}
		h.Verify(h.Time, time.Hour)
	})
}

func FuzzParseHoldersRequest(f *testing.F) {
	v := loadSignalVectors(f)
	for _, tv := range append(v.Holders.Requests, v.Cookies.Requests...) {
		b, _ := hex.DecodeString(tv.Hex)
		f.Add(b)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseHoldersRequest(b)
		if err != nil {
			if !errors.Is(err, ErrSignal) {
				t.Fatalf("error %v does not wrap ErrSignal", err)
			}
			return
		}
		if re, err := r.Marshal(); err != nil || !bytes.Equal(re, b) {
			t.Fatalf("accepted input does not re-encode to itself (%v)", err)
		}
	})
}

func FuzzParseHoldersAnswer(f *testing.F) {
	for _, tv := range loadSignalVectors(f).Holders.Answers {
		b, _ := hex.DecodeString(tv.Hex)
		f.Add(b)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ParseHoldersAnswer(b)
		if err != nil {
			if !errors.Is(err, ErrSignal) {
				t.Fatalf("error %v does not wrap ErrSignal", err)
			}
			return
		}
		if len(a.Records) > MaxHolders || len(b) > MaxHoldersAnswerSize {
			t.Fatalf("accepted %d records in %d bytes", len(a.Records), len(b))
		}
		re := appendHead(nil, kindHoldersAnswer, a.Owner, a.Requester, a.Nonce, a.Time)
		re = append(re, byte(len(a.Records)))
		for _, h := range a.Records {
			re = binary.BigEndian.AppendUint16(re, uint16(len(h.Bytes())))
			re = append(re, h.Bytes()...)
		}
		if re = append(re, a.Signature...); !bytes.Equal(re, b) {
			t.Fatalf("accepted input does not re-encode to itself:\n%x\n%x", b, re)
		}
		a.Verify(a.Owner, a.Requester, a.Nonce, a.Time)
		for _, h := range a.Records {
			CheckHolder(h, a.Owner, a.Requester, h.CID, a.Time, HaveLife)
		}
	})
}
