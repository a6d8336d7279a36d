package group

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/kez"
)

func TestParseLinkRoundTrip(t *testing.T) {
	c := newCast(t)
	ch := newChain(t, c.alice, "Friends")
	ch.add(c.alice, c.alice.PublicKey(), TypeAdd, AddBody(members(c.carol, c.bob)))
	l, err := ParseLink(ch.links[1])
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(l.Bytes(), ch.links[1]) || l.Seqno() != 2 || l.Type() != TypeAdd || l.Group() != testGroup ||
		l.By() != c.alice.PublicKey() || l.Key() != c.alice.PublicKey() || l.Ctime() != time.Unix(vectorNow-3600+60, 0).UTC() {
		t.Fatalf("fields: %v", l)
	}
	first, _ := ParseLink(ch.links[0])
	if l.Prev() != first.ID() || first.Prev().Defined() {
		t.Fatalf("prev %v, first's %v", l.Prev(), first.Prev())
	}
	if !strings.HasPrefix(l.ID().String(), "bafkrei") {
		t.Fatalf("ID %s", l.ID())
	}
	// The body helper sorts by key text, so carol and bob in either order
	// give one body.
	if !bytes.Equal(AddBody(members(c.bob, c.carol)), l.Body()) {
		t.Fatalf("body %s", l.Body())
	}
	if err := c.alice.PublicKey().Verify(kez.ContextGroupLink, l.SignedPayload(), sigOfBytes(t, l.Bytes())); err != nil {
		t.Fatal(err)
	}
}

// TestParseLinkRejects edits valid links in every way a forger or a
// sloppy writer might, re-signing where it matters so that only the
// edit is at fault.
func TestParseLinkRejects(t *testing.T) {
	c := newCast(t)
	a := c.alice
	ak := a.PublicKey()
	ch := newChain(t, a, "Friends")
	create := ch.links[0]
	add := ch.add(a, ak, TypeAdd, AddBody(members(c.bob, c.carol))).Bytes()
	title := ch.add(a, ak, TypeTitle, TitleBody("x")).Bytes()
	head := ch.st.head
	raw := func(typ, body string) []byte {
		return rawLink(t, a, testGroup, ch.st.seqno+1, &head, ch.ctime, ak, typ, []byte(body))
	}
	bobKey, carolKey := c.bob.PublicKey().String(), c.carol.PublicKey().String()
	// lo and hi are bob's and carol's add entries in key text order.
	lo, hi := entry(t, "bob", bobKey, "member"), entry(t, "carol", carolKey, "member")
	if carolKey < bobKey {
		lo, hi = hi, lo
	}
	cases := []struct {
		name string
		b    []byte
		want error
	}{
		{"whitespace", replaceOnce(t, create, `"seqno":1`, `"seqno": 1`), ErrMalformed},
		{"trailing newline", append(bytes.Clone(create), '\n'), ErrMalformed},
		{"field order", resign(t, a, create, `"v":1,"group":"friends@kez.lat"`, `"group":"friends@kez.lat","v":1`), ErrMalformed},
		{"duplicate field", resign(t, a, create, `"v":1,`, `"v":1,"v":1,`), ErrMalformed},
		{"upper-case field", resign(t, a, create, `"seqno"`, `"Seqno"`), ErrMalformed},
		{"extra field", resign(t, a, create, `"v":1,`, `"v":1,"x":1,`), ErrMalformed},
		{"version 2", resign(t, a, create, `"v":1`, `"v":2`), ErrMalformed},
		{"seqno 0", resign(t, a, create, `"seqno":1`, `"seqno":0`), ErrMalformed},
		{"seqno float", resign(t, a, create, `"seqno":1`, `"seqno":1.0`), ErrMalformed},
		{"seqno over the limit", resign(t, a, create, `"seqno":1`, `"seqno":100001`), ErrMalformed},
		{"negative ctime", resign(t, a, create, `"ctime":1`, `"ctime":-1`), ErrMalformed},
		{"escaped group", resign(t, a, create, `"group":"friends`, `"group":"\u0066riends`), ErrMalformed},
		{"upper-case group", resign(t, a, create, `"group":"friends`, `"group":"Friends`), ErrMalformed},
		{"group without domain", resign(t, a, create, `"group":"friends@kez.lat"`, `"group":"friends"`), ErrMalformed},
		{"bad by", resign(t, a, create, `"by":"U`, `"by":"X`), ErrMalformed},
		{"prev upper case", resign(t, a, add, `"prev":"bafk`, `"prev":"BAFK`), ErrMalformed},
		{"unknown type", raw("rename", `{"title":"x"}`), ErrMalformed},
		{"body unsorted keys", resign(t, a, create, `{"handle":"alice@kez.lat","title":"Friends"}`, `{"title":"Friends","handle":"alice@kez.lat"}`), ErrMalformed},
		{"body extra field", resign(t, a, create, `,"title":"Friends"}`, `,"title":"Friends","x":1}`), ErrMalformed},
		{"body missing field", resign(t, a, create, `,"title":"Friends"}`, `}`), ErrMalformed},
		{"body whitespace", resign(t, a, title, `{"title":"x"}`, `{"title": "x"}`), ErrMalformed},
		{"title with a control character", raw(TypeTitle, `{"title":"a\nb"}`), ErrMalformed},
		{"title with C1 control", raw(TypeTitle, "{\"title\":\"a\u0085b\"}"), ErrMalformed},
		{"title too long", raw(TypeTitle, `{"title":"`+strings.Repeat("x", MaxTitleLen+1)+`"}`), ErrMalformed},
		{"title not escaped", raw(TypeTitle, `{"title":"<b>"}`), ErrMalformed},
		{"creator of another domain", resign(t, a, create, `"handle":"alice@kez.lat"`, `"handle":"alice@evil.example"`), ErrMalformed},
		{"add unsorted", raw(TypeAdd, `{"members":[`+hi+`,`+lo+`]}`), ErrMalformed},
		{"add duplicate", raw(TypeAdd, `{"members":[`+entry(t, "bob", bobKey, "member")+`,`+entry(t, "bob", bobKey, "member")+`]}`), ErrMalformed},
		{"add empty", raw(TypeAdd, `{"members":[]}`), ErrMalformed},
		{"add 257", raw(TypeAdd, `{"members":[`+strings.Repeat(lo+",", MaxMembersPerLink)+hi+`]}`), ErrTooManyMembers},
		{"remove 257", raw(TypeRemove, `{"members":[`+strings.Repeat(`"`+bobKey+`",`, MaxMembersPerLink)+`"`+carolKey+`"]}`), ErrTooManyMembers},
		{"add null", raw(TypeAdd, `{"members":null}`), ErrMalformed},
		{"add owner role", raw(TypeAdd, `{"members":[`+entry(t, "bob", bobKey, "owner")+`]}`), ErrMalformed},
		{"add bad handle", raw(TypeAdd, `{"members":[`+entry(t, "Bob", bobKey, "member")+`]}`), ErrMalformed},
		{"remove duplicate", raw(TypeRemove, `{"members":["`+bobKey+`","`+bobKey+`"]}`), ErrMalformed},
		{"role unknown", raw(TypeRole, `{"key":"`+bobKey+`","role":"king"}`), ErrMalformed},
		{"bad signature", flipSig(t, create), ErrBadSignature},
		{"sig padded", append(bytes.Clone(create[:len(create)-2]), `=="}`...), ErrMalformed},
		{"too large", append(bytes.Clone(create), bytes.Repeat([]byte{' '}, MaxLinkSize)...), ErrTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseLink(tc.b)
			if !errors.Is(err, tc.want) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseLink(%.400s) = %.400v, want %v", tc.b, err, tc.want)
			}
		})
	}
	// Another context's signature over the same payload.
	l, _ := ParseLink(create)
	sig, _ := a.Sign(kez.ContextSigchainLink, l.SignedPayload())
	other := appendSig(bytes.Clone(create[:l.sigStart]), sig)
	if _, err := ParseLink(other); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("sigchain context: %v", err)
	}
}

func entry(t *testing.T, name, key, role string) string {
	t.Helper()
	return `{"handle":"` + name + `@kez.lat","key":"` + key + `","role":"` + role + `"}`
}

// flipSig returns b with one bit of its signature flipped.
func flipSig(t *testing.T, b []byte) []byte {
	t.Helper()
	i := bytes.LastIndex(b, []byte(`,"sig":"`))
	sig := sigOfBytes(t, b)
	sig[10] ^= 1
	return appendSig(bytes.Clone(b[:i]), sig)
}
