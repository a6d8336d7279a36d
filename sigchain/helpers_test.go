package sigchain

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/kez"
)

// Fixed test identities: all-zero and all-ones BIP-39 entropy.
const (
	aliceWords = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon art"
	malWords   = "zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo vote"
)

// vectorNow is the verifier's clock for every test vector (2026-01-01).
const vectorNow = 1767225600

func testIdentity(t testing.TB, words string) *kez.Identity {
	t.Helper()
	id, err := kez.FromWords(words)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func atTime(unix int64) time.Time { return time.Unix(unix, 0) }

func fixedClock(unix int64) VerifyOption {
	return WithClock(func() time.Time { return time.Unix(unix, 0) })
}

// builder makes chains link by link for tests, failing the test on error.
type builder struct {
	t     testing.TB
	id    *kez.Identity
	st    *State
	links []*Link
	ctime int64
	now   int64 // the verifier's clock
}

func newBuilder(t testing.TB, id *kez.Identity, handle string) *builder {
	b := &builder{t: t, id: id, ctime: vectorNow - 3600, now: vectorNow}
	b.add(TypeEldest, EldestBody(id.PublicKey(), id.EncryptionKey(0).PublicKey(), 0, handle))
	return b
}

func (b *builder) add(typ string, body []byte, opts ...LinkOption) *Link {
	b.t.Helper()
	l, err := NewLink(b.id, b.st, typ, body, atTime(b.ctime), opts...)
	if err != nil {
		b.t.Fatalf("NewLink %s: %v", typ, err)
	}
	st, err := b.st.Extend([]*Link{l}, fixedClock(b.now))
	if err != nil {
		b.t.Fatalf("Extend %s: %v", typ, err)
	}
	b.st, b.links = st, append(b.links, l)
	b.ctime += 60
	return l
}

// rawLink assembles and signs a link from field texts without any check,
// to build links that break chain rules. prev is "null" or a quoted ID.
func rawLink(t testing.TB, signer kez.Signer, seqno uint64, prev string, ctime int64, key kez.PublicKey, typ string, ignore bool, body string) []byte {
	t.Helper()
	var b strings.Builder
	b.WriteString(`{"v":1,"seqno":` + strconv.FormatUint(seqno, 10))
	b.WriteString(`,"prev":` + prev)
	b.WriteString(`,"ctime":` + strconv.FormatInt(ctime, 10))
	b.WriteString(`,"key":"` + key.String() + `"`)
	b.WriteString(`,"type":"` + typ + `"`)
	b.WriteString(`,"ignore_if_unsupported":` + strconv.FormatBool(ignore))
	b.WriteString(`,"body":` + body)
	payload := b.String() + "}"
	sig, err := signer.Sign(kez.ContextSigchainLink, []byte(payload))
	if err != nil {
		t.Fatal(err)
	}
	return []byte(b.String() + `,"sig":"` + b64.EncodeToString(sig) + `"}`)
}

func quoteID(l *Link) string { return `"` + l.ID().String() + `"` }

func mustParse(t testing.TB, b []byte) *Link {
	t.Helper()
	l, err := ParseLink(b)
	if err != nil {
		t.Fatalf("ParseLink(%s): %v", b, err)
	}
	return l
}
