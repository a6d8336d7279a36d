package sigchain

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/kez-lat/kez-chat/kez"
)

// testDevice returns a fixed device identity; n picks which.
func testDevice(t testing.TB, n byte) *kez.Identity {
	t.Helper()
	id, err := kez.FromSeed(bytes.Repeat([]byte{n}, 64))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// testRequest makes a request at unix time created with a nonce derived
// from n, so the bytes are fixed.
func testRequest(t testing.TB, dev kez.Signer, name string, created int64, n byte) *LinkRequest {
	t.Helper()
	var nonce [16]byte
	for i := range nonce {
		nonce[i] = n + byte(i)
	}
	r, err := newLinkRequest(dev, name, atTime(created), nonce)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// addDeviceLink adds dev to b's chain with a request made just before.
func (b *builder) addDevice(dev kez.Signer, name string) *Link {
	b.t.Helper()
	return b.add(TypeAddDevice, AddDeviceBody(testRequest(b.t, dev, name, b.ctime-30, byte(len(b.links)))))
}

// tryLink signs body as b's next link without checks and verifies the
// whole chain with it.
func (b *builder) try(typ, body string) error {
	b.t.Helper()
	last := b.links[len(b.links)-1]
	l := rawLink(b.t, b.id, last.seqno+1, quoteID(last), b.ctime, b.id.PublicKey(), typ, false, body)
	return verifyBytes(append(bytesOf(b.links), l))
}

// flipRequestSig flips one bit of a link request's signature.
func flipRequestSig(t testing.TB, raw []byte) []byte {
	t.Helper()
	i := bytes.LastIndex(raw, []byte(`,"sig":"`)) + len(`,"sig":"`)
	sig, err := b64.DecodeString(string(raw[i : len(raw)-2]))
	if err != nil {
		t.Fatal(err)
	}
	sig[5] ^= 1
	return append(append(bytes.Clone(raw[:i]), b64.EncodeToString(sig)...), '"', '}')
}

func TestLinkRequestRoundTrip(t *testing.T) {
	dev := testDevice(t, 1)
	now := time.Unix(vectorNow, 0)
	r, err := NewLinkRequest(dev, "Laptop <work> & \"home\" ü", now)
	if err != nil {
		t.Fatal(err)
	}
	if r.Device() != dev.PublicKey() || r.Name() != "Laptop <work> & \"home\" ü" ||
		!r.Created().Equal(now) || r.Expires().Sub(r.Created()) != LinkRequestTTL || len(r.Nonce()) != 16 {
		t.Fatalf("fields: %s %q %v %v", r.Device(), r.Name(), r.Created(), r.Expires())
	}
	p, err := ParseLinkRequest(r.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p.Bytes(), r.Bytes()) || p.Code() != r.Code() {
		t.Fatal("parse changed the request")
	}
	// Canonical JSON passes through encoding/json unchanged.
	j, err := json.Marshal(struct {
		R *LinkRequest `json:"request"`
	}{r})
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		R *LinkRequest `json:"request"`
	}
	if err := json.Unmarshal(j, &back); err != nil || back.R.Code() != r.Code() {
		t.Fatalf("JSON round trip: %v", err)
	}
	r2, _ := NewLinkRequest(dev, r.Name(), now)
	if bytes.Equal(r.Nonce(), r2.Nonce()) || r.Code() == r2.Code() {
		t.Fatal("two requests share a nonce or a code")
	}
}

func TestLinkRequestFresh(t *testing.T) {
	r := testRequest(t, testDevice(t, 1), "phone", vectorNow, 0)
	for _, c := range []struct {
		at   int64
		want error
	}{
		{vectorNow, nil},
		{vectorNow + 600, nil},
		{vectorNow + 601, ErrLinkExpired},
		{vectorNow - 300, nil},
		{vectorNow - 301, ErrLinkNotYetValid},
	} {
		err := r.CheckFresh(atTime(c.at))
		if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("at %+d: %v, want %v", c.at-vectorNow, err, c.want)
		}
	}
}

func TestParseLinkRequestRejects(t *testing.T) {
	dev, other := testDevice(t, 1), testDevice(t, 2)
	r := testRequest(t, dev, "phone", vectorNow, 0)
	raw := string(r.Bytes())
	sig := raw[strings.Index(raw, `,"sig":"`)+8 : len(raw)-2]
	payload := raw[:strings.Index(raw, `,"sig":"`)]
	sign := func(s kez.Signer, ctx, p string) string {
		b, err := s.Sign(ctx, []byte(p+"}"))
		if err != nil {
			t.Fatal(err)
		}
		return p + `,"sig":"` + b64.EncodeToString(b) + `"}`
	}
	resign := func(p string) string { return sign(dev, kez.ContextDeviceLinkRequest, p) }
	nonce := b64.EncodeToString(r.Nonce())
	for name, b := range map[string]string{
		"empty":           ``,
		"not json":        `hello`,
		"whitespace":      strings.Replace(raw, `"created":`, `"created": `, 1),
		"trailing":        raw + "\n",
		"bit flipped":     string(flipRequestSig(t, r.Bytes())),
		"sig padded":      strings.Replace(raw, sig, sig+"==", 1),
		"other signer":    sign(other, kez.ContextDeviceLinkRequest, payload),
		"other context":   sign(dev, kez.ContextSigchainLink, payload),
		"renamed":         strings.Replace(raw, `"phone"`, `"phon3"`, 1),
		"extra field":     resign(payload + `,"x":1`),
		"missing nonce":   resign(strings.Replace(payload, `,"nonce":"`+nonce+`"`, ``, 1)),
		"short nonce":     resign(strings.Replace(payload, nonce, nonce[:21], 1)),
		"long ttl":        resign(strings.Replace(payload, `"expires":1767226200`, `"expires":1767226201`, 1)),
		"expires first":   resign(strings.Replace(payload, `"expires":1767226200`, `"expires":1767225600`, 1)),
		"negative":        resign(strings.Replace(payload, `"created":1767225600`, `"created":-1`, 1)),
		"string created":  resign(strings.Replace(payload, `"created":1767225600`, `"created":"1767225600"`, 1)),
		"control in name": resign(strings.Replace(payload, `"phone"`, `"ph\none"`, 1)),
		"format in name":  resign(strings.Replace(payload, `"phone"`, "\"ph\u202eone\"", 1)),
		"empty name":      resign(strings.Replace(payload, `"phone"`, `""`, 1)),
		"space name":      resign(strings.Replace(payload, `"phone"`, `" phone"`, 1)),
		"long name":       resign(strings.Replace(payload, `"phone"`, `"`+strings.Repeat("é", 33)+`"`, 1)),
		"bad key":         resign(strings.Replace(payload, dev.PublicKey().String(), "N"+dev.PublicKey().String()[1:], 1)),
		"too large":       resign(strings.Replace(payload, `"phone"`, `"`+strings.Repeat("a", 1100)+`"`, 1)),
	} {
		if _, err := ParseLinkRequest([]byte(b)); !errors.Is(err, ErrBadLinkRequest) {
			t.Errorf("%s: %v, want ErrBadLinkRequest", name, err)
		}
	}
	if _, err := NewLinkRequest(dev, "", atTime(vectorNow)); !errors.Is(err, ErrBadLinkRequest) {
		t.Errorf("empty name: %v", err)
	}
	if _, err := NewLinkRequest(dev, "tab\there", atTime(vectorNow)); !errors.Is(err, ErrBadLinkRequest) {
		t.Errorf("tab in name: %v", err)
	}
}

func TestLinkCode(t *testing.T) {
	r := testRequest(t, testDevice(t, 1), "phone", vectorNow, 0)
	c := r.Code()
	s := c.String()
	if len(s) != 21 || strings.Count(s, "-") != 4 || s[4] != '-' || s[19] != '-' {
		t.Fatalf("code text %q", s)
	}
	for _, in := range []string{s, strings.ToLower(s), strings.ReplaceAll(s, "-", ""), strings.ReplaceAll(s, "-", " "), " " + s + " "} {
		got, err := ParseLinkCode(in)
		if err != nil || got != c {
			t.Fatalf("ParseLinkCode(%q) = %v, %v", in, got, err)
		}
	}
	// Crockford reading: O is 0, I and L are 1.
	var ones LinkCode
	for i := range ones {
		ones[i] = 0
	}
	zero := ones.String()
	if zero[0] != '0' {
		t.Fatalf("zero code %q", zero)
	}
	if got, err := ParseLinkCode(strings.ReplaceAll(zero, "0", "o")); err != nil || got != ones {
		t.Fatalf("O for 0: %v %v", got, err)
	}
	// Every single wrong character and every swap of two different
	// characters is caught by the check character.
	sym := []byte(strings.ReplaceAll(s, "-", ""))
	for i := range sym {
		for _, ch := range []byte(crockford) {
			if ch == sym[i] {
				continue
			}
			typo := bytes.Clone(sym)
			typo[i] = ch
			if _, err := ParseLinkCode(string(typo)); !errors.Is(err, ErrBadLinkCode) {
				t.Fatalf("typo %s at %d not caught: %v", typo, i, err)
			}
		}
		for j := i + 1; j < len(sym); j++ {
			if sym[i] == sym[j] {
				continue
			}
			sw := bytes.Clone(sym)
			sw[i], sw[j] = sw[j], sw[i]
			if _, err := ParseLinkCode(string(sw)); !errors.Is(err, ErrBadLinkCode) {
				t.Fatalf("swap %d,%d not caught: %v", i, j, err)
			}
		}
	}
	for _, bad := range []string{"", s[:20], s + "0", strings.Replace(s, s[:1], "U", 1), strings.Replace(s, "-", "_", 1), s + "é"} {
		if _, err := ParseLinkCode(bad); !errors.Is(err, ErrBadLinkCode) {
			t.Errorf("ParseLinkCode(%q): %v", bad, err)
		}
	}
	var back LinkCode
	if err := back.UnmarshalText([]byte(s)); err != nil || back != c {
		t.Fatal("text round trip")
	}
}

func TestGFMulIsAField(t *testing.T) {
	// 2 generates the multiplicative group: its powers are the 31 non-zero
	// elements, so the weights 2^0 … 2^16 are distinct and non-zero.
	seen := map[byte]bool{}
	w := byte(1)
	for range 31 {
		if seen[w] || w == 0 || w > 31 {
			t.Fatalf("2 is not a generator: %d repeats", w)
		}
		seen[w] = true
		w = gfMul(w, 2)
	}
	if w != 1 {
		t.Fatalf("2^31 = %d", w)
	}
}

func TestDevicesState(t *testing.T) {
	alice := testIdentity(t, aliceWords)
	d1, d2 := testDevice(t, 1), testDevice(t, 2)
	b := newBuilder(t, alice, "alice@kez.lat")
	add1 := b.addDevice(d1, "laptop")
	b.addDevice(d2, "phone")
	rev := b.add(TypeRevokeDevice, RevokeDeviceBody(d1.PublicKey()))
	st := b.st
	cur := st.CurrentDevices()
	if len(cur) != 2 || cur[0] != alice.PublicKey() || cur[1] != d2.PublicKey() {
		t.Fatalf("current %v", cur)
	}
	ds := st.Devices()
	if len(ds) != 3 || !ds[0].Primary || ds[0].Name != PrimaryDeviceName || ds[0].AddedSeqno != 1 ||
		ds[1].Key != d1.PublicKey() || ds[1].Name != "laptop" || !ds[1].Revoked || ds[1].RevokedSeqno != rev.Seqno() ||
		!ds[1].RevokedAt.Equal(rev.Ctime()) || ds[1].AddedSeqno != add1.Seqno() || !ds[1].Added.Equal(add1.Ctime()) ||
		ds[2].Revoked || ds[2].Primary {
		t.Fatalf("devices %+v", ds)
	}
	if d, ok := st.DeviceOf(d2.PublicKey()); !ok || d.Name != "phone" || !st.IsCurrentDevice(d2.PublicKey()) || st.IsCurrentDevice(d1.PublicKey()) {
		t.Fatalf("DeviceOf %+v %v", d, ok)
	}
	if _, ok := st.DeviceOf(testDevice(t, 3).PublicKey()); ok {
		t.Fatal("unknown device found")
	}
	// Extend agrees with Verify and leaves the earlier state alone.
	first, err := Verify(b.links[:3], fixedClock(vectorNow))
	if err != nil {
		t.Fatal(err)
	}
	ext, err := first.Extend(b.links[3:], fixedClock(vectorNow))
	if err != nil || len(ext.CurrentDevices()) != 2 || len(first.CurrentDevices()) != 3 || !first.IsCurrentDevice(d1.PublicKey()) {
		t.Fatalf("Extend: %v %v %v", err, ext.CurrentDevices(), first.CurrentDevices())
	}
	// The primary may be revoked while another device remains.
	b.add(TypeRevokeDevice, RevokeDeviceBody(alice.PublicKey()))
	if cur := b.st.CurrentDevices(); len(cur) != 1 || cur[0] != d2.PublicKey() {
		t.Fatalf("after revoking the primary: %v", cur)
	}
	// A chain without device links has one device, its key.
	if cur := newBuilder(t, alice, "").st.CurrentDevices(); len(cur) != 1 || cur[0] != alice.PublicKey() {
		t.Fatalf("eldest only: %v", cur)
	}
}

// TestDeviceRules breaks each add_device and revoke_device rule with a
// correctly signed link and expects bad_body.
func TestDeviceRules(t *testing.T) {
	alice := testIdentity(t, aliceWords)
	d1, d2, d3 := testDevice(t, 1), testDevice(t, 2), testDevice(t, 3)
	b := newBuilder(t, alice, "alice@kez.lat")
	b.addDevice(d1, "laptop")
	b.add(TypeRevokeDevice, RevokeDeviceBody(d1.PublicKey()))
	req := testRequest(t, d2, "phone", b.ctime-30, 9)
	body := string(AddDeviceBody(req))
	if err := b.try(TypeAddDevice, body); err != nil {
		t.Fatalf("the good link fails: %v", err)
	}
	other := testRequest(t, d3, "phone", b.ctime-30, 9)
	signed := func(dev kez.Signer, name string, created int64) *LinkRequest {
		return testRequest(t, dev, name, created, 9)
	}
	forged := flipRequestSig(t, req.Bytes())
	cases := map[string]string{
		"counter-signature": strings.Replace(body, string(req.Bytes()), string(forged), 1),
		"other device":      `{"device":"` + d3.PublicKey().String() + `","name":"phone","request":` + string(req.Bytes()) + `}`,
		"other name":        `{"device":"` + d2.PublicKey().String() + `","name":"tablet","request":` + string(req.Bytes()) + `}`,
		"request of other":  `{"device":"` + d2.PublicKey().String() + `","name":"phone","request":` + string(other.Bytes()) + `}`,
		"expired":           string(AddDeviceBody(signed(d2, "phone", b.ctime-601))),
		"too early":         string(AddDeviceBody(signed(d2, "phone", b.ctime+301))),
		"re-add revoked":    string(AddDeviceBody(signed(d1, "laptop", b.ctime))),
		"primary":           string(AddDeviceBody(signed(alice, "me", b.ctime))),
		"malformed request": `{"device":"` + d2.PublicKey().String() + `","name":"phone","request":{"device":"` + d2.PublicKey().String() + `"}}`,
		"request string":    `{"device":"` + d2.PublicKey().String() + `","name":"phone","request":"x"}`,
		"extra field":       strings.Replace(body, `{"device"`, `{"a":1,"device"`, 1),
	}
	for name, c := range cases {
		err := b.try(TypeAddDevice, c)
		if !errors.Is(err, ErrBadBody) {
			t.Errorf("add_device %s: %v, want bad body", name, err)
		}
		t.Logf("%s: %v", name, err)
	}
	// At the edges of the window the link is fine.
	for _, created := range []int64{b.ctime - 600, b.ctime + 300} {
		if err := b.try(TypeAddDevice, string(AddDeviceBody(signed(d2, "phone", created)))); err != nil {
			t.Errorf("created %+d: %v", created-b.ctime, err)
		}
	}
	for name, c := range map[string]string{
		"unknown":  string(RevokeDeviceBody(d3.PublicKey())),
		"twice":    string(RevokeDeviceBody(d1.PublicKey())),
		"last":     string(RevokeDeviceBody(alice.PublicKey())),
		"bad key":  `{"device":"x"}`,
		"no field": `{}`,
	} {
		err := b.try(TypeRevokeDevice, c)
		if !errors.Is(err, ErrBadBody) {
			t.Errorf("revoke_device %s: %v, want bad body", name, err)
		}
		t.Logf("%s: %v", name, err)
	}
	// NewLink refuses to sign what the verifier would refuse.
	if _, err := NewLink(alice, b.st, TypeRevokeDevice, RevokeDeviceBody(alice.PublicKey()), atTime(b.ctime)); !errors.Is(err, ErrBadBody) {
		t.Errorf("NewLink revoking the last device: %v", err)
	}
}

func TestMaxDevices(t *testing.T) {
	alice := testIdentity(t, aliceWords)
	b := newBuilder(t, alice, "")
	for i := range MaxDevices - 1 {
		b.addDevice(testDevice(t, byte(10+i)), "d")
	}
	if n := len(b.st.CurrentDevices()); n != MaxDevices {
		t.Fatalf("%d current", n)
	}
	extra := string(AddDeviceBody(testRequest(t, testDevice(t, 100), "one too many", b.ctime, 1)))
	if err := b.try(TypeAddDevice, extra); !errors.Is(err, ErrBadBody) {
		t.Fatalf("33rd device: %v", err)
	}
	// After a revocation there is room again.
	b.add(TypeRevokeDevice, RevokeDeviceBody(testDevice(t, 10).PublicKey()))
	if err := b.try(TypeAddDevice, extra); err != nil {
		t.Fatalf("after a revoke: %v", err)
	}
}

func TestVerifyDeviceLink(t *testing.T) {
	alice := testIdentity(t, aliceWords)
	d1 := testDevice(t, 1)
	b := newBuilder(t, alice, "alice@kez.lat")
	add := b.addDevice(d1, "laptop")
	rev := b.add(TypeRevokeDevice, RevokeDeviceBody(d1.PublicKey()))
	ch, err := VerifyDeviceLink(add.Bytes())
	if err != nil || ch.Person != alice.PublicKey() || ch.Device != d1.PublicKey() || ch.Name != "laptop" || ch.Revoke ||
		ch.Request == nil || ch.Request.Device() != d1.PublicKey() || ch.Link.ID() != add.ID() {
		t.Fatalf("add: %+v %v", ch, err)
	}
	ch, err = VerifyDeviceLink(rev.Bytes())
	if err != nil || !ch.Revoke || ch.Device != d1.PublicKey() || ch.Person != alice.PublicKey() || ch.Request != nil {
		t.Fatalf("revoke: %+v %v", ch, err)
	}
	if _, err := VerifyDeviceLink(b.links[0].Bytes()); !errors.Is(err, ErrNotDeviceLink) {
		t.Errorf("eldest: %v", err)
	}
	if _, err := VerifyDeviceLink(append(bytes.Clone(add.Bytes()), ' ')); !errors.Is(err, ErrMalformed) {
		t.Errorf("trailing space: %v", err)
	}
	forged := resign(t, add.Bytes(), func(p []byte) []byte { s, _ := testIdentity(t, malWords).Sign(kez.ContextSigchainLink, p); return s })
	if _, err := VerifyDeviceLink(forged); !errors.Is(err, ErrBadSignature) || !errors.Is(err, ErrInvalid) {
		t.Errorf("forged: %v", err)
	}
	// A link signed by the device itself, adding itself, is refused.
	selfReq := testRequest(t, d1, "self", vectorNow-3000, 1)
	self := rawLink(t, d1, 2, quoteID(b.links[0]), vectorNow-3000, d1.PublicKey(), TypeAddDevice, false, string(AddDeviceBody(selfReq)))
	if _, err := VerifyDeviceLink(self); !errors.Is(err, ErrBadBody) {
		t.Errorf("self-add: %v", err)
	}
	// A stale request is refused without the chain too.
	stale := rawLink(t, alice, 2, quoteID(b.links[0]), vectorNow, alice.PublicKey(), TypeAddDevice, false,
		string(AddDeviceBody(testRequest(t, testDevice(t, 2), "old", vectorNow-601, 1))))
	if _, err := VerifyDeviceLink(stale); !errors.Is(err, ErrBadBody) {
		t.Errorf("stale: %v", err)
	}
}

// TestDeviceNameUnicodeVersion: device names are checked against the
// Unicode 15.0.0 character database (docs/spec/sigchain.md, "Link
// request"), so that every verifier accepts the same chains. Characters
// assigned only in Unicode 16.0 are refused. If this fails after a Go
// upgrade, unicode.IsPrint moved to newer tables: chains with such names
// would verify for new clients and fail for old ones. Freeze the tables
// (or change the spec's version for every verifier) before shipping.
func TestDeviceNameUnicodeVersion(t *testing.T) {
	for _, name := range []string{"phone \U0001FAE9", "\u1C89", "tablet \u2427"} { // Unicode 16.0: face with bags under eyes, Cyrillic capital tje, a control picture
		if err := CheckDeviceName(name); err == nil {
			t.Errorf("%+q is accepted: it was assigned after Unicode 15.0.0 (Go's tables are %s)", name, unicode.Version)
		}
	}
	for _, name := range []string{"phone \U0001FAE8", "ноутбук", "tablet \u2426"} { // assigned by 15.0
		if err := CheckDeviceName(name); err != nil {
			t.Errorf("%+q: %v", name, err)
		}
	}
}
