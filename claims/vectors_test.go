package claims

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2/schnorr"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors.json")

// vectors are the values docs/spec/claims.md shows, in
// testdata/vectors.json and on the page.
type vectors struct {
	Comment   string          `json:"comment"`
	Statement statementVector `json:"statement"`
	Nostr     nostrVector     `json:"nostr"`
}

type statementVector struct {
	Words     string `json:"words"`
	Key       string `json:"key"`
	Service   string `json:"service"`
	Identity  string `json:"identity"`
	Seqno     uint64 `json:"seqno"`
	Prev      string `json:"prev"`
	Payload   string `json:"payload"`
	SignedHex string `json:"signed_hex"`
	Sig       string `json:"sig"`
	Text      string `json:"text"`
}

type nostrVector struct {
	SecretHex string `json:"secret_hex"`
	Nsec      string `json:"nsec"`
	Npub      string `json:"npub"`
	PubkeyHex string `json:"pubkey_hex"`
	CreatedAt int64  `json:"created_at"`
	AuxHex    string `json:"aux_hex"`
	Statement string `json:"statement"`
	Event     string `json:"event"`
	ID        string `json:"id"`
	Sig       string `json:"sig"`
}

// makeVectors computes every value from its inputs.
func makeVectors(t *testing.T) vectors {
	id := zeroIdentity(t)
	c := newChain(t, id)
	seqno, prev := c.next()
	st := NewStatement(id, ServiceDNS, "example.com", seqno, prev)
	signed, err := kez.SignedMessage(kez.ContextClaim, st.Payload())
	if err != nil {
		t.Fatal(err)
	}
	nsec, npub := nostrKey(t, secretA)
	nst := NewStatement(id, ServiceNostr, npub, seqno, prev)
	var aux [32]byte
	created := time.Unix(1767225600, 0)
	ev, err := nostrEventAt(nsec, nst, created, schnorr.CustomNonce(aux))
	if err != nil {
		t.Fatal(err)
	}
	e, err := ParseNostrEvent(ev)
	if err != nil {
		t.Fatal(err)
	}
	return vectors{
		Comment: "Vectors of docs/spec/claims.md (the page shows the same values); checked by claims/vectors_test.go.",
		Statement: statementVector{
			Words: zeroWords, Key: id.PublicKey().String(), Service: st.Service, Identity: st.Identity,
			Seqno: seqno, Prev: prev, Payload: string(st.Payload()), SignedHex: hex.EncodeToString(signed),
			Sig: base64.RawURLEncoding.EncodeToString(st.Sig), Text: st.Text(),
		},
		Nostr: nostrVector{
			SecretHex: secretA, Nsec: nsec, Npub: npub, PubkeyHex: e.PubKey, CreatedAt: created.Unix(),
			AuxHex: hex.EncodeToString(aux[:]), Statement: nst.Text(), Event: ev, ID: e.ID, Sig: e.Sig,
		},
	}
}

func TestVectors(t *testing.T) {
	want := makeVectors(t)
	b, err := json.MarshalIndent(want, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, '\n')
	if *update {
		if err := os.WriteFile("testdata/vectors.json", b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	file, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(file, b) {
		t.Fatalf("testdata/vectors.json differs from the computed vectors:\n%s", b)
	}
	// The page shows the same values.
	var page vectors
	if err := json.Unmarshal(specBlock(t, "claims"), &page); err != nil {
		t.Fatal(err)
	}
	page.Comment = want.Comment
	if page != want {
		t.Fatalf("docs/spec/claims.md shows other vectors:\n%+v\nwant\n%+v", page, want)
	}
	// Each value is what a reader gets from the text alone.
	v := want.Statement
	st, err := ParseStatement(v.Text, v.Service, v.Identity)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Verify(); err != nil {
		t.Fatal(err)
	}
	if string(st.Payload()) != v.Payload || st.Key.String() != v.Key || st.Prev != v.Prev || st.Seqno != v.Seqno {
		t.Fatal("the statement's text does not give the vector's values")
	}
	n := want.Nostr
	e, err := ParseNostrEvent(n.Event)
	if err != nil {
		t.Fatal(err)
	}
	nst, err := ParseStatement(e.Content, ServiceNostr, n.Npub)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckNostrEvent(e, n.Npub, nst); err != nil {
		t.Fatal(err)
	}
	cl := sigchain.Claim{Service: ServiceNostr, Identity: n.Npub, Seqno: v.Seqno, Prev: v.Prev}
	if err := CheckPosition(nst, st.Key, cl); err != nil {
		t.Fatal(err)
	}
}

// specBlock returns the JSON block that follows "<!-- vectors:NAME -->"
// in docs/spec/claims.md.
func specBlock(t *testing.T, name string) []byte {
	t.Helper()
	doc, err := os.ReadFile("../docs/spec/claims.md")
	if err != nil {
		t.Fatal(err)
	}
	marker := []byte("<!-- vectors:" + name + " -->\n```json\n")
	i := bytes.Index(doc, marker)
	if i < 0 {
		t.Fatalf("the page has no vectors %q", name)
	}
	rest := doc[i+len(marker):]
	end := bytes.Index(rest, []byte("\n```"))
	if end < 0 {
		t.Fatalf("vectors %q are not closed", name)
	}
	return rest[:end]
}
