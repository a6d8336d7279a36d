package claims

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/schnorr"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/nats-io/nkeys"
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

// TestVectorsFromThePage checks the page's vectors with what the page
// says alone, without this package: the payload from the fields (§2), the
// signed bytes from the framing, ed25519 over them by the nkey, the text;
// the nostr event's id as the SHA-256 of its NIP-01 serialization and its
// BIP-340 signature by the secret key with the given aux (checked first on
// BIP-340's own test vector 0, so that "aux" means what BIP-340 says).
func TestVectorsFromThePage(t *testing.T) {
	var page vectors
	if err := json.Unmarshal(specBlock(t, "claims"), &page); err != nil {
		t.Fatal(err)
	}
	v := page.Statement
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	payload := `{"identity":` + q(v.Identity) + `,"key":` + q(v.Key) + `,"prev":` + q(v.Prev) +
		`,"seqno":` + strconv.FormatUint(v.Seqno, 10) + `,"service":` + q(v.Service) + `}`
	if payload != v.Payload {
		t.Fatalf("payload from the fields:\n%s\nthe page:\n%s", payload, v.Payload)
	}
	const context = "kez/v1 identity claim"
	signed := "KEZ\x00sig\x00v1\x00" + string(rune(len(context))) + context + payload
	if hex.EncodeToString([]byte(signed)) != v.SignedHex {
		t.Fatal("signed_hex is not the framing of the payload")
	}
	sig, err := base64.RawURLEncoding.Strict().DecodeString(v.Sig)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := nkeys.FromPublicKey(v.Key)
	if err != nil {
		t.Fatal(err)
	}
	if err := kp.Verify([]byte(signed), sig); err != nil {
		t.Fatalf("sig does not verify by key over signed_hex: %v", err)
	}
	if want := strings.Join([]string{"kez-claim=v1", v.Key, strconv.FormatUint(v.Seqno, 10), v.Prev, v.Sig}, " "); v.Text != want {
		t.Fatalf("text %q, want %q", v.Text, want)
	}

	// BIP-340 test vector 0: aux randomness is what CustomNonce takes.
	bip := func(secretHex, auxHex string, msg []byte) string {
		sk, _ := hex.DecodeString(secretHex)
		priv, _ := btcec.PrivKeyFromBytes(sk)
		var aux [32]byte
		a, _ := hex.DecodeString(auxHex)
		copy(aux[:], a)
		s, err := schnorr.Sign(priv, msg, schnorr.CustomNonce(aux))
		if err != nil {
			t.Fatal(err)
		}
		return hex.EncodeToString(s.Serialize())
	}
	if got := bip("0000000000000000000000000000000000000000000000000000000000000003",
		"0000000000000000000000000000000000000000000000000000000000000000", make([]byte, 32)); got !=
		"e907831f80848d1069a5371b402410364bdf1c5f8307b0084c55f1ce2dca821525f66a4a85ea8b71e482a74f382d2ce5ebeee8fdb2172f477df4900d310536c0" {
		t.Fatalf("BIP-340 vector 0: %s", got)
	}
	n := page.Nostr
	var ev struct {
		Content   string     `json:"content"`
		CreatedAt int64      `json:"created_at"`
		ID        string     `json:"id"`
		Kind      int        `json:"kind"`
		PubKey    string     `json:"pubkey"`
		Sig       string     `json:"sig"`
		Tags      [][]string `json:"tags"`
	}
	if err := json.Unmarshal([]byte(n.Event), &ev); err != nil {
		t.Fatal(err)
	}
	sk, _ := hex.DecodeString(n.SecretHex)
	_, pub := btcec.PrivKeyFromBytes(sk)
	if hex.EncodeToString(schnorr.SerializePubKey(pub)) != n.PubkeyHex || ev.PubKey != n.PubkeyHex {
		t.Fatal("pubkey_hex is not the secret key's")
	}
	tags, _ := json.Marshal(ev.Tags)
	ser := `[0,` + q(ev.PubKey) + `,` + strconv.FormatInt(ev.CreatedAt, 10) + `,` + strconv.Itoa(ev.Kind) + `,` + string(tags) + `,` + q(ev.Content) + `]`
	id := sha256.Sum256([]byte(ser))
	if hex.EncodeToString(id[:]) != n.ID || ev.ID != n.ID || ev.Sig != n.Sig || ev.CreatedAt != n.CreatedAt || ev.Content != n.Statement || ev.Kind != 1 {
		t.Fatal("the event's id, sig, created_at, content or kind is not the page's")
	}
	if got := bip(n.SecretHex, n.AuxHex, id[:]); got != n.Sig {
		t.Fatalf("BIP-340 signature of the id with aux_hex: %s, the page has %s", got, n.Sig)
	}
	if len(ev.Tags) != 1 || len(ev.Tags[0]) != 2 || ev.Tags[0][0] != "kez" || ev.Tags[0][1] != v.Key {
		t.Fatalf("tags %v", ev.Tags)
	}
	if f := strings.Split(n.Statement, " "); len(f) != 5 || f[1] != v.Key || f[2] != strconv.FormatUint(v.Seqno, 10) || f[3] != v.Prev {
		t.Fatalf("the nostr statement is not for the same key and position: %q", n.Statement)
	} else {
		nsig, err := base64.RawURLEncoding.Strict().DecodeString(f[4])
		if err != nil {
			t.Fatal(err)
		}
		np := `{"identity":` + q(n.Npub) + `,"key":` + q(v.Key) + `,"prev":` + q(v.Prev) +
			`,"seqno":` + strconv.FormatUint(v.Seqno, 10) + `,"service":"nostr"}`
		if err := kp.Verify([]byte("KEZ\x00sig\x00v1\x00"+string(rune(len(context)))+context+np), nsig); err != nil {
			t.Fatalf("the nostr statement's signature does not verify over its payload: %v", err)
		}
	}
}
