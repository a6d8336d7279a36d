package sigchain

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/kez-lat/kez-chat/kez"
)

// entry stores a link's exact bytes in a vector: as itself when it is
// valid JSON without surrounding whitespace, else as a hex string.
func entry(b []byte) json.RawMessage {
	if json.Valid(b) && len(bytes.TrimSpace(b)) == len(b) {
		return json.RawMessage(bytes.Clone(b))
	}
	s, _ := json.Marshal(hex.EncodeToString(b))
	return s
}

func entries(links ...[]byte) []json.RawMessage {
	out := make([]json.RawMessage, 0, len(links))
	for _, l := range links {
		out = append(out, entry(l))
	}
	return out
}

func bytesOf(links []*Link) [][]byte {
	out := make([][]byte, len(links))
	for i, l := range links {
		out[i] = l.Bytes()
	}
	return out
}

// replaceOnce replaces the first old with new in a copy of b, failing the
// test if old is absent.
func replaceOnce(t testing.TB, b []byte, old, new string) []byte {
	t.Helper()
	if !bytes.Contains(b, []byte(old)) {
		t.Fatalf("%q not in %s", old, b)
	}
	return bytes.Replace(bytes.Clone(b), []byte(old), []byte(new), 1)
}

// generateVectors builds every test vector from the fixed identities. Run
// `go test ./sigchain -run TestVectors -update` after changing it.
func generateVectors(t *testing.T) []*vector {
	alice := testIdentity(t, aliceWords)
	mal := testIdentity(t, malWords)
	ak := alice.PublicKey()
	var vs []*vector
	valid := func(name, desc string, links []*Link) {
		st, err := Verify(links, fixedClock(vectorNow))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		vs = append(vs, &vector{Name: name, Description: desc, Now: vectorNow, Links: entries(bytesOf(links)...), Expect: stateOf(st)})
	}
	fail := func(name, desc, kind string, links ...[]byte) {
		vs = append(vs, &vector{Name: name, Description: desc, Now: vectorNow, Links: entries(links...), Error: kind})
	}

	// Valid chains.
	e := newBuilder(t, alice, "alice@kez.lat")
	valid("valid_eldest", "A chain of one eldest link with a handle.", e.links)

	n := newBuilder(t, alice, "")
	valid("valid_eldest_no_handle", "An eldest link without a handle.", n.links)

	f := newBuilder(t, alice, "alice@kez.lat")
	gh := f.add(TypeAddClaim, AddClaimBody("github", "alice", "https://gist.github.com/alice/0123456789abcdef"))
	f.add(TypeAddClaim, AddClaimBody("nostr", "npub1alice <ä> & \"co\" \\ \u2028", "nostr:note1proof"))
	f.add(TypeSetEncryptionKey, SetEncryptionKeyBody(alice.EncryptionKey(1).PublicKey(), 1))
	f.add(TypeRevokeClaim, RevokeClaimBody(gh.ID()))
	f.add("x_future_extension", []byte(`{"anything":[1,2,{"nested":true}]}`), IgnoreIfUnsupported())
	f.add(TypeSetSharedFiles, []byte(`{"files":[{"cid":"bafkreiexample","name":"old.txt","size":3}],"version":1}`))
	f.add(TypeSetHandle, SetHandleBody("alice2@kez.lat"))
	f.add(TypeSetSharedFiles, []byte(`{"files":[{"cid":"bafkreiexample2","name":"report.pdf","size":123456}],"version":1}`))
	valid("valid_full", "Every link type: claims added and one revoked, an encryption key rotation, an ignored unknown type, a handle change and two shared-files manifests (the latest wins).", f.links)

	r := newBuilder(t, alice, "alice@kez.lat")
	r.add(TypeSetHandle, SetHandleBody(""))
	r.ctime -= 60 // the next link has the same ctime
	r.add(TypeSetEncryptionKey, SetEncryptionKeyBody(alice.EncryptionKey(7).PublicKey(), 7))
	valid("valid_handle_released_same_ctime", "The handle is released (empty) and two links share a ctime; generations may skip.", r.links)

	// Tampering and chain structure.
	b := newBuilder(t, alice, "alice@kez.lat")
	b.add(TypeAddClaim, AddClaimBody("github", "alice", "https://gist.github.com/alice/1"))
	b.add(TypeSetHandle, SetHandleBody("alice@kez.lat"))
	l1, l2, l3 := b.links[0], b.links[1], b.links[2]

	fail("fail_empty", "A chain with no links.", "broken_chain")
	sig := l2.Signature()
	sig[0] ^= 1
	forged := replaceOnce(t, l2.Bytes(), b64.EncodeToString(l2.Signature()), b64.EncodeToString(sig))
	fail("fail_bad_signature", "Link 2's signature has one bit flipped.", "bad_signature", l1.Bytes(), forged)
	fail("fail_tampered_body", "Link 2's claimed identity was changed after signing.", "bad_signature", l1.Bytes(),
		replaceOnce(t, l2.Bytes(), `"identity":"alice"`, `"identity":"mallory"`), l3.Bytes())
	fail("fail_other_context", "Link 2 is signed over the right bytes but under the handle-claim context.", "bad_signature", l1.Bytes(),
		resign(t, l2.Bytes(), func(p []byte) []byte { s, _ := alice.Sign("kez/v1 handle claim", p); return s }))
	fail("fail_signed_by_other_key", "Link 2 names and is signed by another key than the eldest.", "wrong_key", l1.Bytes(),
		rawLink(t, mal, 2, quoteID(l1), vectorNow-3000, mal.PublicKey(), TypeSetHandle, false, `{"handle":"mallory@kez.lat"}`))
	fail("fail_dropped_link", "Link 2 is missing.", "broken_chain", l1.Bytes(), l3.Bytes())
	fail("fail_duplicate_link", "Link 2 appears twice.", "broken_chain", l1.Bytes(), l2.Bytes(), l2.Bytes(), l3.Bytes())
	fail("fail_swapped_links", "Links 2 and 3 are swapped.", "broken_chain", l1.Bytes(), l3.Bytes(), l2.Bytes())
	fail("fail_wrong_prev", "Link 3 has the right seqno but its prev is link 1's ID.", "broken_chain", l1.Bytes(), l2.Bytes(),
		rawLink(t, alice, 3, quoteID(l1), vectorNow-3000, ak, TypeSetHandle, false, `{"handle":"x@kez.lat"}`))
	fail("fail_no_eldest", "The first link is not an eldest link.", "broken_chain",
		rawLink(t, alice, 1, "null", vectorNow-3600, ak, TypeSetHandle, false, `{"handle":"alice@kez.lat"}`))
	fail("fail_second_eldest", "An eldest link at seqno 2.", "broken_chain", l1.Bytes(),
		rawLink(t, alice, 2, quoteID(l1), vectorNow-3000, ak, TypeEldest, false, string(l1.Body())))
	fail("fail_eldest_with_prev", "The eldest link has a prev.", "broken_chain",
		rawLink(t, alice, 1, quoteID(l1), vectorNow-3600, ak, TypeEldest, false, string(l1.Body())))
	fail("fail_ctime_backwards", "Link 2's ctime is before link 1's.", "bad_ctime", l1.Bytes(),
		rawLink(t, alice, 2, quoteID(l1), vectorNow-3601, ak, TypeSetHandle, false, `{"handle":"x@kez.lat"}`))
	fail("fail_ctime_future", "Link 2's ctime is 11 minutes after the verifier's clock.", "bad_ctime", l1.Bytes(),
		rawLink(t, alice, 2, quoteID(l1), vectorNow+660, ak, TypeSetHandle, false, `{"handle":"x@kez.lat"}`))
	fail("fail_unsupported_type", "An unknown link type without ignore_if_unsupported.", "unsupported", l1.Bytes(),
		rawLink(t, alice, 2, quoteID(l1), vectorNow-3000, ak, "x_future_extension", false, `{}`))

	// Bodies that break their type's rules (correctly signed).
	body := func(name, desc, typ, body string) {
		fail(name, desc, "bad_body", l1.Bytes(), rawLink(t, alice, 2, quoteID(l1), vectorNow-3000, ak, typ, false, body))
	}
	enc0 := b64.EncodeToString(alice.EncryptionKey(0).PublicKey().Bytes())
	fail("fail_eldest_primary_key_mismatch", "The eldest body's primary_key is another key.", "bad_body",
		rawLink(t, alice, 1, "null", vectorNow-3600, ak, TypeEldest, false,
			`{"encryption_generation":0,"encryption_key":"`+enc0+`","handle":"","primary_key":"`+mal.PublicKey().String()+`"}`))
	fail("fail_eldest_missing_field", "The eldest body has no handle field.", "bad_body",
		rawLink(t, alice, 1, "null", vectorNow-3600, ak, TypeEldest, false,
			`{"encryption_generation":0,"encryption_key":"`+enc0+`","primary_key":"`+ak.String()+`"}`))
	fail("fail_eldest_bad_encryption_key", "The eldest encryption key is 31 bytes.", "bad_body",
		rawLink(t, alice, 1, "null", vectorNow-3600, ak, TypeEldest, false,
			`{"encryption_generation":0,"encryption_key":"`+enc0[:41]+`","handle":"","primary_key":"`+ak.String()+`"}`))
	body("fail_encryption_generation_not_higher", "set_encryption_key with the current generation 0.", TypeSetEncryptionKey,
		`{"encryption_generation":0,"encryption_key":"`+enc0+`"}`)
	body("fail_revoke_unknown_claim", "revoke_claim names a link that is not an active claim.", TypeRevokeClaim, `{"claim":`+quoteID(l1)+`}`)
	body("fail_body_unknown_field", "set_handle with an extra field.", TypeSetHandle, `{"handle":"a@kez.lat","x":1}`)
	body("fail_bad_handle", "A handle with upper-case letters.", TypeSetHandle, `{"handle":"Alice@kez.lat"}`)
	body("fail_claim_bad_service", "add_claim with a service name containing a space.", TypeAddClaim, `{"identity":"a","proof":"p","service":"git hub"}`)
	body("fail_body_too_large", "A set_handle body over 4 KiB.", TypeSetHandle, `{"handle":"`+strings.Repeat("a", 4100)+`@kez.lat"}`)
	body("fail_shared_files_too_large", "A set_shared_files body over 60 KiB.", TypeSetSharedFiles, `{"blob":"`+strings.Repeat("a", 61<<10)+`"}`)

	// Bytes that are not the one canonical form.
	m := l2.Bytes()
	fail("fail_whitespace", "A space after a colon.", "malformed", l1.Bytes(), replaceOnce(t, m, `"seqno":2`, `"seqno": 2`))
	fail("fail_field_order", "seqno before v.", "malformed", l1.Bytes(), replaceOnce(t, m, `{"v":1,"seqno":2`, `{"seqno":2,"v":1`))
	fail("fail_body_unsorted", "Body keys out of order.", "malformed", l1.Bytes(),
		replaceOnce(t, m, `{"identity":"alice","proof":"https://gist.github.com/alice/1","service":"github"}`,
			`{"proof":"https://gist.github.com/alice/1","identity":"alice","service":"github"}`))
	fail("fail_body_escape", `A letter written as a \u escape.`, "malformed", l1.Bytes(), replaceOnce(t, m, `"alice"`, `"\u0061lice"`))
	fail("fail_body_html_unescaped", "A raw '<' in a string (canonical form writes \\u003c).", "malformed", l1.Bytes(), replaceOnce(t, m, `"alice"`, `"<alice"`))
	fail("fail_body_float", "A number with a fraction.", "malformed", l1.Bytes(),
		rawLink(t, alice, 2, quoteID(l1), vectorNow-3000, ak, "x_ext", true, `{"n":1.5}`))
	fail("fail_body_duplicate_key", "A body with a duplicate key.", "malformed", l1.Bytes(),
		rawLink(t, alice, 2, quoteID(l1), vectorNow-3000, ak, "x_ext", true, `{"a":1,"a":2}`))
	fail("fail_invalid_utf8", "A string with an invalid UTF-8 byte (stored as hex).", "malformed", l1.Bytes(), replaceOnce(t, m, `"alice"`, "\"al\xffce\""))
	fail("fail_leading_zero", "seqno written as 02.", "malformed", l1.Bytes(), replaceOnce(t, m, `"seqno":2`, `"seqno":02`))
	fail("fail_version_2", "A link of format version 2.", "malformed", l1.Bytes(), replaceOnce(t, m, `{"v":1`, `{"v":2`))
	fail("fail_prev_uppercase", "prev in upper-case base32.", "malformed", l1.Bytes(),
		replaceOnce(t, m, l1.ID().String(), "b"+strings.ToUpper(l1.ID().String()[1:])))
	st := b64.EncodeToString(l2.Signature())
	fail("fail_sig_padding", "sig with base64 padding.", "malformed", l1.Bytes(), replaceOnce(t, m, st+`"}`, st+`=="}`))
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	bits := st[:len(st)-1] + string(alphabet[strings.IndexByte(alphabet, st[len(st)-1])|1])
	fail("fail_sig_trailing_bits", "sig whose unused trailing bits are not zero (a second text for the same bytes).", "malformed", l1.Bytes(), replaceOnce(t, m, st, bits))
	fail("fail_trailing_newline", "A newline after the link.", "malformed", l1.Bytes(), append(bytes.Clone(m), '\n'))
	fail("fail_link_too_large", "A link over 64 KiB.", "too_large", l1.Bytes(),
		rawLink(t, alice, 2, quoteID(l1), vectorNow-3000, ak, "x_ext", true, `{"a":"`+strings.Repeat("a", 64<<10)+`"}`))

	// Devices. Device n is the identity of the 64-byte seed of n repeated.
	d1, d2, d3 := testDevice(t, 1), testDevice(t, 2), testDevice(t, 3)
	dv := newBuilder(t, alice, "alice@kez.lat")
	dv.addDevice(d1, "laptop")
	dv.addDevice(d2, "phone <work> & ü")
	dv.add(TypeRevokeDevice, RevokeDeviceBody(d1.PublicKey()))
	valid("valid_devices", "Two devices added (each add_device carries the device's own signed link request, made 30 seconds before the link), then the first revoked.", dv.links)

	// The failing chains: eldest, add laptop (d1), revoke it; link 4 breaks a rule.
	db := newBuilder(t, alice, "alice@kez.lat")
	db.addDevice(d1, "laptop")
	db.add(TypeRevokeDevice, RevokeDeviceBody(d1.PublicKey()))
	head := db.links[len(db.links)-1]
	ct := db.ctime
	devFail := func(name, desc string, typ, body string) {
		fail(name, desc, "bad_body", append(bytesOf(db.links), rawLink(t, alice, 4, quoteID(head), ct, ak, typ, false, body))...)
	}
	req2 := testRequest(t, d2, "phone", ct-30, 40)
	devFail("fail_device_bad_counter_signature", "The add_device link's request has one bit of its signature (by the device key) flipped.", TypeAddDevice,
		strings.Replace(string(AddDeviceBody(req2)), string(req2.Bytes()), string(flipRequestSig(t, req2.Bytes())), 1))
	devFail("fail_device_request_other_device", "The body names device 3, the request is device 2's.", TypeAddDevice,
		`{"device":"`+d3.PublicKey().String()+`","name":"phone","request":`+string(req2.Bytes())+`}`)
	devFail("fail_device_request_other_name", "The body names the device \"tablet\", its request \"phone\".", TypeAddDevice,
		`{"device":"`+d2.PublicKey().String()+`","name":"tablet","request":`+string(req2.Bytes())+`}`)
	devFail("fail_device_request_expired", "The request expired one second before the link's ctime.", TypeAddDevice,
		string(AddDeviceBody(testRequest(t, d2, "phone", ct-601, 41))))
	devFail("fail_device_readd_revoked", "Device 1, revoked at seqno 3, is added again with a new request.", TypeAddDevice,
		string(AddDeviceBody(testRequest(t, d1, "laptop", ct-30, 42))))
	devFail("fail_device_add_primary", "The chain's own key is added as a device (with a request it signed).", TypeAddDevice,
		string(AddDeviceBody(testRequest(t, alice, "me", ct-30, 43))))
	devFail("fail_device_revoke_unknown", "revoke_device names device 3, never added.", TypeRevokeDevice, string(RevokeDeviceBody(d3.PublicKey())))
	devFail("fail_device_revoke_last", "revoke_device names the primary key, the last current device.", TypeRevokeDevice, string(RevokeDeviceBody(ak)))
	shortNonce := rawRequest(t, d2, `{"created":`+strconv.FormatInt(ct-30, 10)+`,"device":"`+d2.PublicKey().String()+`","expires":`+strconv.FormatInt(ct+570, 10)+`,"name":"phone","nonce":"AAAAAAAAAAAAAAAA"}`)
	devFail("fail_device_malformed_request", "The request is signed by its device but its nonce is 12 bytes, not 16.", TypeAddDevice,
		`{"device":"`+d2.PublicKey().String()+`","name":"phone","request":`+string(shortNonce)+`}`)

	many := newBuilder(t, alice, "")
	for i := range MaxDevices - 1 {
		many.addDevice(testDevice(t, byte(10+i)), "device "+strconv.Itoa(10+i))
	}
	last := many.links[len(many.links)-1]
	fail("fail_device_too_many", "The primary and 31 added devices are current; link 33 adds a 33rd (device 100).", "bad_body",
		append(bytesOf(many.links), rawLink(t, alice, last.seqno+1, quoteID(last), many.ctime, ak, TypeAddDevice, false,
			string(AddDeviceBody(testRequest(t, testDevice(t, 100), "one too many", many.ctime-30, 44)))))...)
	return vs
}

// rawRequest signs a link request payload (without "sig", canonical) with
// dev and returns the request's bytes, without any check.
func rawRequest(t testing.TB, dev kez.Signer, payload string) []byte {
	t.Helper()
	sig, err := dev.Sign(kez.ContextDeviceLinkRequest, []byte(payload))
	if err != nil {
		t.Fatal(err)
	}
	return []byte(payload[:len(payload)-1] + `,"sig":"` + b64.EncodeToString(sig) + `"}`)
}

// resign replaces a link's signature with sign(payload).
func resign(t testing.TB, link []byte, sign func(payload []byte) []byte) []byte {
	l := mustParse(t, link)
	sig := sign(l.SignedPayload())
	return replaceOnce(t, link, b64.EncodeToString(l.Signature()), b64.EncodeToString(sig))
}
