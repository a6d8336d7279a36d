package signal

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
	"time"
)

// The cookie vectors of docs/spec/signalling.md §7: the cookie of the
// valid request of §5 under the secret 32 × 0x07 in its epoch, the cookie
// reply carrying it, and the request sent again with it.
type cookieVectors struct {
	Comment string         `json:"comment"`
	Secret  string         `json:"secret"`
	Epoch   int64          `json:"epoch"`
	Cookie  string         `json:"cookie"`
	Replies []signalVector `json:"replies"`
	// Requests with a cookie: a locate request and a holders request.
	Requests []signalVector `json:"requests"`
}

var cookieSecret = bytes.Repeat([]byte{7}, cookieSecretLen)

func buildCookieVectors(t testing.TB, req *LocateRequest) cookieVectors {
	at := req.Time
	e := cookieEpoch(at)
	ck := makeCookie(cookieSecret, req.Requester, req.Nonce, kindLocate, e)
	cr := &CookieReply{Owner: req.Owner, Requester: req.Requester, Nonce: req.Nonce, Time: at.Add(time.Second), Kind: kindLocate, Cookie: ck}
	rb, err := cr.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	withCookie := *req
	withCookie.Cookie = ck[:]
	lb, err := withCookie.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	hr := &HoldersRequest{Owner: req.Owner, Requester: req.Requester, Nonce: req.Nonce, Time: at, CID: blobCID(t, 1), Cookie: ck[:]}
	hb, err := hr.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	mod := func(b []byte, f func([]byte) []byte) string { return hex.EncodeToString(f(bytes.Clone(b))) }
	return cookieVectors{
		Comment: "Cookies (signalling.md §7): cookie = HMAC-SHA256(secret, requester | nonce | kind | epoch)[:16] for the valid locate request, epoch = its time in s / 120.",
		Secret:  hex.EncodeToString(cookieSecret),
		Epoch:   e,
		Cookie:  hex.EncodeToString(ck[:]),
		Replies: []signalVector{
			{Name: "valid", Hex: hex.EncodeToString(rb), Expect: "ok"},
			{Name: "fail_truncated", Hex: mod(rb, func(b []byte) []byte { return b[:len(b)-1] }), Expect: "parse_error"},
			{Name: "fail_extended", Hex: mod(rb, func(b []byte) []byte { return append(b, 0) }), Expect: "parse_error"},
			{Name: "fail_kind", Hex: mod(rb, func(b []byte) []byte { b[5] = kindAnswer; return b }), Expect: "parse_error"},
			{Name: "fail_for_kind", Hex: mod(rb, func(b []byte) []byte { b[locateHeadLen] = kindHave; return b }), Expect: "parse_error", Comment: "a cookie for a have"},
		},
		Requests: []signalVector{
			{Name: "valid_locate", Hex: hex.EncodeToString(lb), Expect: "ok"},
			{Name: "valid_holders", Hex: hex.EncodeToString(hb), Expect: "ok"},
			{Name: "fail_locate_short_cookie", Hex: mod(lb, func(b []byte) []byte { return b[:len(b)-1] }), Expect: "parse_error"},
			{Name: "fail_holders_long_cookie", Hex: mod(hb, func(b []byte) []byte { return append(b, 0) }), Expect: "parse_error"},
		},
	}
}

func TestCookieVectors(t *testing.T) {
	v := loadSignalVectors(t).Cookies
	secret, _ := hex.DecodeString(v.Secret)
	for _, tv := range v.Replies {
		b, _ := hex.DecodeString(tv.Hex)
		c, err := ParseCookieReply(b)
		if tv.Expect != "ok" {
			if !errors.Is(err, ErrSignal) {
				t.Errorf("reply %s: got %v, want ErrSignal", tv.Name, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("reply %s: %v", tv.Name, err)
		}
		if hex.EncodeToString(c.Cookie[:]) != v.Cookie || makeCookie(secret, c.Requester, c.Nonce, c.Kind, v.Epoch) != c.Cookie {
			t.Errorf("reply %s: cookie %x is not the HMAC of the spec", tv.Name, c.Cookie)
		}
		if again, _ := c.Marshal(); !bytes.Equal(again, b) {
			t.Errorf("reply %s does not re-encode to itself", tv.Name)
		}
	}
	for _, tv := range v.Requests {
		b, _ := hex.DecodeString(tv.Hex)
		var cookie []byte
		var err error
		if b[5] == kindLocate {
			var r *LocateRequest
			if r, err = ParseLocateRequest(b); err == nil {
				cookie = r.Cookie
			}
		} else {
			var r *HoldersRequest
			if r, err = ParseHoldersRequest(b); err == nil {
				cookie = r.Cookie
			}
		}
		if tv.Expect != "ok" {
			if !errors.Is(err, ErrSignal) {
				t.Errorf("request %s: got %v, want ErrSignal", tv.Name, err)
			}
			continue
		}
		if err != nil || hex.EncodeToString(cookie) != v.Cookie {
			t.Errorf("request %s: cookie %x, %v", tv.Name, cookie, err)
		}
	}
}

// The jar accepts the cookies of the current and the previous epoch only,
// for the requester, nonce and kind they were made for.
func TestCookieJarRotation(t *testing.T) {
	j := newCookieJar(nil)
	at := time.UnixMilli(vectorTimeMs)
	req := testIdentity(t, seedBob).PublicKey()
	nonce := vectorNonce()
	c, err := j.mint(req, nonce, kindLocate, at)
	if err != nil {
		t.Fatal(err)
	}
	if !j.valid(c[:], req, nonce, kindLocate, at.Add(CookieRotation)) {
		t.Error("refused a cookie of the previous epoch")
	}
	if j.valid(c[:], req, nonce, kindHoldersRequest, at) || j.valid(c[:], testIdentity(t, seedCarol).PublicKey(), nonce, kindLocate, at) {
		t.Error("accepted a cookie for another kind or requester")
	}
	if j.valid(c[:], req, nonce, kindLocate, at.Add(2*CookieRotation)) {
		t.Error("accepted a cookie two epochs old")
	}
}

// FuzzParseCookieReply checks the cookie reply decoder on untrusted
// bytes: never a panic, and what it accepts re-encodes to itself.
func FuzzParseCookieReply(f *testing.F) {
	for _, tv := range loadSignalVectors(f).Cookies.Replies {
		b, _ := hex.DecodeString(tv.Hex)
		f.Add(b)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseCookieReply(b)
		if err != nil {
			if !errors.Is(err, ErrSignal) {
				t.Fatalf("error %v does not wrap ErrSignal", err)
			}
			return
		}
		re, err := c.Marshal()
		if err != nil || !bytes.Equal(re, b) {
			t.Fatalf("accepted input does not re-encode to itself (%v)", err)
		}
	})
}
