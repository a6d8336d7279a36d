package group

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/kez"
)

// The attacker's review of issue 17 (docs/security.md §7, "Groups (issue
// 17)").

// TestTitleRefusesInvisible: a title is shown to every member next to the
// group's name, so it may not carry characters that render as nothing or
// move other text: bidi controls (U+202E turns "Family" into a look-alike
// of another group), zero-width characters, line and paragraph separators
// (a fake second line in `kez group show`), non-ASCII spaces. Only Cc was
// refused before. Both the create link and a title link are checked, by
// the writer and by a verifier given the link signed anyway.
func TestTitleRefusesInvisible(t *testing.T) {
	c := newCast(t)
	ak := c.alice.PublicKey()
	bad := []string{
		"Family\u202Eylimaf",     // right-to-left override
		"Fam\u200Bily",           // zero-width space
		"Family\u2028owner: mal", // line separator
		"Family\u2029",           // paragraph separator
		"\uFEFFFamily",           // byte order mark
		"Family\u00A0",           // no-break space
		"Fam\u00ADily",           // soft hyphen
		"Family\U000E0041",       // tag character
		"Fami\u2066ly\u2069",     // bidi isolates
		"Family \u1C89",          // assigned in Unicode 16.0: refused by the 15.0.0 tables, as device names
	}
	for _, title := range bad {
		if err := CheckTitle(title); err == nil {
			t.Errorf("CheckTitle(%+q) accepted", title)
		}
		if _, err := NewCreate(c.alice, ak, testGroup, handleOf("alice"), title, time.Unix(vectorNow, 0)); !errors.Is(err, ErrMalformed) {
			t.Errorf("NewCreate with title %+q: %v", title, err)
		}
		ch := team(t, c)
		if _, err := ch.try(c.alice, ak, TypeTitle, TitleBody(title)); !errors.Is(err, ErrMalformed) {
			t.Errorf("NewLink title %+q: %v", title, err)
		}
		raw := ch.next(c.alice, ak, TypeTitle, TitleBody(title))
		if _, err := Verify(context.Background(), append(ch.links, raw), nil, fixedClock(vectorNow)); !errors.Is(err, ErrMalformed) {
			t.Errorf("Verify title %+q: %v", title, err)
		}
		create := rawLink(t, c.alice, testGroup, 1, nil, vectorNow, ak, TypeCreate, createBody(handleOf("alice"), title))
		if _, err := ParseLink(create); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseLink create with title %+q: %v", title, err)
		}
	}
	// Control: letters of any script, symbols, emoji and ASCII spaces
	// stay fine, and so does the empty title.
	for _, title := range []string{"", "Ünïcode ☺", "家族 🏠", "A & B <c>", "  spaced  ", "עברית"} {
		if err := CheckTitle(title); err != nil {
			t.Errorf("CheckTitle(%+q): %v", title, err)
		}
	}
}

// TestSpecWorkedExampleFromPage: the worked example of docs/spec/group.md
// is checked from the page's own text, as a reader without this package
// would: the link of §1 (joined into one line), the 29 framing bytes of
// §2, and the link ID and group ID of §8.
func TestSpecWorkedExampleFromPage(t *testing.T) {
	page, err := os.ReadFile("../docs/spec/group.md")
	if err != nil {
		t.Fatal(err)
	}
	spec := string(page)
	m := regexp.MustCompile("(?s)Example \\(`valid_create`.*?```\n(.*?)\n```").FindStringSubmatch(spec)
	if m == nil {
		t.Fatal("no worked example in §1")
	}
	var link []byte
	for _, line := range strings.Split(m[1], "\n") {
		link = append(link, strings.TrimSpace(line)...)
	}
	l, err := ParseLink(link)
	if err != nil {
		t.Fatalf("the example link does not parse: %v", err)
	}
	v := regexp.MustCompile(`The (\d+) bytes before the payload are, in hex,\s+` + "`([0-9a-f]+)`").FindStringSubmatch(spec)
	if v == nil {
		t.Fatal("§2 gives no framing bytes")
	}
	prefix, _ := hex.DecodeString(v[2])
	want, _ := kez.SignedMessage(kez.ContextGroupLink, nil)
	if !bytes.Equal(prefix, want) {
		t.Fatalf("§2 framing %x, want %x", prefix, want)
	}
	if v[1] != "29" || len(prefix) != 29 {
		t.Errorf("§2 says the framing is %s bytes; it is %d", v[1], len(prefix))
	}
	alice, err := kez.ParsePublicKey("UCFGNZWEHPQWK7TS6EPQGMRCC57SLH2UC346ZOXPP5FAITI6LJJMLL5M")
	if err != nil || l.Key() != alice || !strings.Contains(spec, "`"+alice.String()+"`") {
		t.Fatalf("the example is not signed by alice's key of §8: %v", err)
	}
	sig, _ := b64.DecodeString(string(link[bytes.LastIndex(link, []byte(`"sig":"`))+7 : len(link)-2]))
	if err := alice.Verify(kez.ContextGroupLink, l.SignedPayload(), sig); err != nil {
		t.Fatalf("signature over prefix||payload: %v", err)
	}
	id := regexp.MustCompile("the link's ID is `(bafkrei[a-z2-7]+)`").FindStringSubmatch(spec)
	gid := regexp.MustCompile("the group ID\\s+`([0-9a-f]{64})`").FindStringSubmatch(spec)
	if id == nil || gid == nil {
		t.Fatal("§8 gives no link ID or group ID")
	}
	if l.ID().String() != id[1] {
		t.Errorf("§8 link ID %s, the example's is %s", id[1], l.ID())
	}
	if d, _ := digestOf(l.ID()); hex.EncodeToString(d[:]) != gid[1] {
		t.Errorf("§8 group ID %s, the example's is %x", gid[1], d)
	}
	// And it is the vector's link.
	for _, vec := range readVectors(t) {
		if vec.Name == "valid_create" && !bytes.Equal(vec.linkBytes(t)[0], link) {
			t.Error("the example is not the valid_create vector's link")
		}
	}
}
