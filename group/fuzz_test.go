package group

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

// seedLinks adds every link of the vectors to a fuzz corpus.
func seedLinks(f *testing.F) {
	for _, v := range readVectors(f) {
		for _, b := range v.linkBytes(f) {
			if len(b) < 8<<10 { // the big adds slow every input down
				f.Add(b)
			}
		}
	}
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"v":1}`))
}

// FuzzParseLink checks that ParseLink never panics, that it accepts a link
// only in its one canonical form (its bytes come back from its fields),
// and that every refusal is ErrInvalid.
func FuzzParseLink(f *testing.F) {
	seedLinks(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := ParseLink(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v is not ErrInvalid", err)
			}
			return
		}
		if !bytes.Equal(l.Bytes(), b) {
			t.Fatal("Bytes differ from the input")
		}
		var prev *[32]byte
		if l.hasPrev {
			prev = &l.prev
		}
		head := appendHead(nil, l.group, l.seqno, prev, l.ctime, l.by, l.key, l.typ, l.Body())
		if !bytes.Equal(append(head, '}'), l.SignedPayload()) {
			t.Fatal("the signed payload is not the re-encoded link")
		}
		if err := l.key.Verify("kez/v1 group link", l.SignedPayload(), sigOfBytes(t, b)); err != nil {
			t.Fatal("accepted a link whose signature does not verify")
		}
	})
}

// sigOfBytes returns the signature of a link's bytes.
func sigOfBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	i := bytes.LastIndex(b, []byte(`,"sig":"`))
	sig, err := b64.DecodeString(string(b[i+8 : len(b)-2]))
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// FuzzVerify checks Verify on a chain with one fuzzed link after a valid
// prefix: it never panics, refuses with ErrInvalid, and what it accepts
// keeps the state's invariants (one owner, at most MaxMembers members,
// no duplicates, the owner a member).
func FuzzVerify(f *testing.F) {
	c := newCast(f)
	ch := team(f, c)
	prefix := ch.links
	seedLinks(f)
	f.Add(ch.next(c.alice, c.alice.PublicKey(), TypeRemove, RemoveBody(c.bob.PublicKey())))
	f.Add(ch.next(c.bob, c.bob.PublicKey(), TypeTitle, TitleBody("t")))
	f.Add(ch.next(c.aliceDev, c.alice.PublicKey(), TypeRole, RoleBody(c.carol.PublicKey(), RoleOwner)))
	devs := (&vector{Devices: []vectorDevice{{Person: c.alice.PublicKey().String(), Device: c.aliceDev.PublicKey().String()}}}).checker()
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, links := range [][][]byte{{b}, append(prefix[:len(prefix):len(prefix)], b)} {
			st, err := Verify(context.Background(), links, devs, fixedClock(vectorNow))
			if err != nil {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("error %v is not ErrInvalid", err)
				}
				continue
			}
			owners, seen := 0, map[[32]byte]bool{}
			for _, m := range st.Members() {
				if m.Role == RoleOwner {
					owners++
					if m.Key != st.Owner() {
						t.Fatal("the owner member is not Owner()")
					}
				}
				if seen[m.Key] {
					t.Fatal("a member twice")
				}
				seen[m.Key] = true
				if !m.Role.Valid() || m.Since == 0 || m.Since > st.Seqno() {
					t.Fatalf("member %+v", m)
				}
			}
			if owners != 1 || len(st.Members()) > MaxMembers || st.Epoch() > st.Seqno() {
				t.Fatalf("%d owners, %d members, epoch %d", owners, len(st.Members()), st.Epoch())
			}
		}
	})
}
