package chat

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/kez"
)

// syncVectorFile is docs/spec/chat.md §8.4's test vectors.
var syncVectorFile = filepath.Join("testdata", "sync-vectors.json")

type syncVector struct {
	Name string `json:"name"`
	Kind Kind   `json:"kind"`
	Body string `json:"body"` // hex
	// What an ok_ vector says.
	To      string   `json:"to,omitempty"`
	OrigKnd Kind     `json:"orig_kind,omitempty"`
	Orig    string   `json:"orig_body,omitempty"` // hex
	Reads   []string `json:"reads,omitempty"`     // "key id"
	Op      byte     `json:"op,omitempty"`
	Key     string   `json:"key,omitempty"`
	Seqno   uint64   `json:"seqno,omitempty"`
	Head    string   `json:"head,omitempty"`
	Handle  string   `json:"handle,omitempty"`
	Keys    []keyVec `json:"keys,omitempty"`
}

// keyVec is one record of a sync-keys vector: the generation, and the
// private and public keys in hex.
type keyVec struct {
	Generation uint32 `json:"generation"`
	Private    string `json:"private"`
	Public     string `json:"public"`
}

type syncVectors struct {
	Comment []string     `json:"comment"`
	Vectors []syncVector `json:"vectors"`
}

func loadSyncVectors(t testing.TB) *syncVectors {
	t.Helper()
	b, err := os.ReadFile(syncVectorFile)
	if err != nil {
		t.Fatal(err)
	}
	var vs syncVectors
	if err := json.Unmarshal(b, &vs); err != nil {
		t.Fatal(err)
	}
	return &vs
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// parseSync parses body as a sync message of kind k.
func parseSync(k Kind, body []byte) (any, error) {
	switch k {
	case KindSyncSent:
		return parseSyncSent(body)
	case KindSyncRead:
		return parseSyncRead(body)
	case KindSyncContact:
		return parseSyncContact(body)
	case KindSyncKeys:
		return parseSyncKeys(body)
	}
	return nil, errors.New("no such sync kind")
}

// The sync bodies' vectors: each ok_ vector parses to what it says and
// writes back byte for byte; each fail_ vector is refused with
// ErrMalformed.
func TestSyncVectors(t *testing.T) {
	vs := loadSyncVectors(t)
	if len(vs.Vectors) < 10 {
		t.Fatalf("only %d vectors", len(vs.Vectors))
	}
	for _, v := range vs.Vectors {
		t.Run(v.Name, func(t *testing.T) {
			body := mustHex(t, v.Body)
			got, err := parseSync(v.Kind, body)
			if v.Name[:3] == "fai" {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("accepted, or refused without ErrMalformed: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var back []byte
			switch s := got.(type) {
			case syncSent:
				if s.To.String() != v.To || s.Kind != v.OrigKnd || hex.EncodeToString(s.Body) != v.Orig {
					t.Fatalf("parsed %+v", s)
				}
				back = marshalSyncSent(s.To, &Message{Kind: s.Kind, Body: s.Body})
			case []readMark:
				if len(s) != len(v.Reads) {
					t.Fatalf("%d marks, want %d", len(s), len(v.Reads))
				}
				for i, m := range s {
					if m.From.String()+" "+m.ID.String() != v.Reads[i] {
						t.Fatalf("mark %d: %s %s", i, m.From, m.ID)
					}
				}
				back = marshalSyncRead(s)
			case syncContact:
				if s.Op != v.Op || s.Key.String() != v.Key || s.Seqno != v.Seqno || s.Handle != v.Handle ||
					(s.Op == syncContactPinned && s.Head.String() != v.Head) {
					t.Fatalf("parsed %+v", s)
				}
				back = marshalSyncContact(s)
			case []keyRecord:
				if len(s) != len(v.Keys) {
					t.Fatalf("%d records, want %d", len(s), len(v.Keys))
				}
				for i, r := range s {
					w := v.Keys[i]
					if r.Generation != w.Generation || hex.EncodeToString(r.Private[:]) != w.Private || hex.EncodeToString(r.publicKey().Bytes()) != w.Public {
						t.Fatalf("record %d: generation %d private %x public %x", i, r.Generation, r.Private, r.publicKey().Bytes())
					}
				}
				back = marshalSyncKeys(s)
			}
			if !bytes.Equal(back, body) {
				t.Fatalf("written back as %x", back)
			}
		})
	}
}

// FuzzSyncBodies parses arbitrary bytes as each sync body: no panic, a
// refusal wraps ErrMalformed or ErrTooLarge, and what parses writes back
// to exactly the bytes it came from.
func FuzzSyncBodies(f *testing.F) {
	for _, v := range loadSyncVectors(f).Vectors {
		f.Add(mustHex(f, v.Body))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, k := range []Kind{KindSyncSent, KindSyncRead, KindSyncContact, KindSyncKeys} {
			got, err := parseSync(k, data)
			if err != nil {
				if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) {
					t.Fatalf("%s: an error wrapping no sentinel: %v", k, err)
				}
				continue
			}
			var back []byte
			switch s := got.(type) {
			case syncSent:
				back = marshalSyncSent(s.To, &Message{Kind: s.Kind, Body: s.Body})
			case []readMark:
				back = marshalSyncRead(s)
			case syncContact:
				back = marshalSyncContact(s)
			case []keyRecord:
				back = marshalSyncKeys(s)
			}
			if !bytes.Equal(back, data) {
				t.Fatalf("%s: %x parsed and wrote back as %x", k, data, back)
			}
		}
	})
}

// TestSyncVectorsGenerate makes the vectors (they are fixed: making them
// again gives the same bytes) and checks the file holds exactly them.
// Regenerate with: go test ./chat -run TestSyncVectorsGenerate -update-vectors
func TestSyncVectorsGenerate(t *testing.T) {
	var k1, k2 kez.PublicKey
	for i := range k1 {
		k1[i], k2[i] = byte(i+1), byte(0xa0+i)
	}
	id1, id2 := MessageID{0x01, 0x02, 0x03}, MessageID{0xf0, 0xf1}
	head, err := cid.Prefix{Version: 1, Codec: cid.DagCBOR, MhType: 0x12, MhLength: -1}.Sum([]byte("a link")) // sha2-256
	if err != nil {
		t.Fatal(err)
	}
	sent := func(name string, to kez.PublicKey, kind Kind, body []byte) syncVector {
		return syncVector{Name: name, Kind: KindSyncSent, Body: hex.EncodeToString(marshalSyncSent(to, &Message{Kind: kind, Body: body})),
			To: to.String(), OrigKnd: kind, Orig: hex.EncodeToString(body)}
	}
	pinned := syncContact{Op: syncContactPinned, Key: k2, Seqno: 7, Head: head, Handle: "bob@kez.lat"}
	verified := syncContact{Op: syncContactVerified, Key: k2, Handle: "bob@kez.lat"}
	// sync-keys: generations 0 and 1 of the identity of entropy 32 × 00
	// (docs/spec/identity.md §7).
	zero, err := kez.FromWords("abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon art")
	if err != nil {
		t.Fatal(err)
	}
	var recs []keyRecord
	var kvs []keyVec
	for g := range uint32(2) {
		r := keyRecord{Generation: g}
		copy(r.Private[:], zero.EncryptionKey(g).Bytes())
		recs = append(recs, r)
		kvs = append(kvs, keyVec{Generation: g, Private: hex.EncodeToString(r.Private[:]), Public: hex.EncodeToString(zero.EncryptionKey(g).PublicKey().Bytes())})
	}
	keysHex := func(rs ...keyRecord) string { return hex.EncodeToString(marshalSyncKeys(rs)) }
	many := make([]keyRecord, maxKeyRecords+1)
	for i := range many {
		many[i] = keyRecord{Generation: uint32(i), Private: recs[0].Private}
	}
	vs := syncVectors{
		Comment: []string{
			"Test vectors for the bodies of the sync messages between one person's devices, docs/spec/chat.md sections 8.4 and 8.6.",
			"`kind` is the message kind, `body` its body in hex.",
			"An ok_ vector must parse to the fields it gives (keys in nkey text form, message IDs and bodies in hex, the head as a CID string; a sync-keys record's private key and the X25519 public key it makes in hex) and write back to `body` byte for byte.",
			"A fail_ vector must be refused (the error wraps chat.ErrMalformed).",
		},
		Vectors: []syncVector{
			sent("ok_sent_text", k2, KindText, []byte("hello bob")),
			sent("ok_sent_empty_body", k2, KindText, []byte{}),
			sent("ok_sent_unknown_kind", k2, "app.poll", []byte{0, 1, 2}),
			{Name: "ok_read_one", Kind: KindSyncRead, Body: hex.EncodeToString(marshalSyncRead([]readMark{{k1, id1}})), Reads: []string{k1.String() + " " + id1.String()}},
			{Name: "ok_read_two", Kind: KindSyncRead, Body: hex.EncodeToString(marshalSyncRead([]readMark{{k1, id1}, {k2, id2}})),
				Reads: []string{k1.String() + " " + id1.String(), k2.String() + " " + id2.String()}},
			{Name: "ok_contact_pinned", Kind: KindSyncContact, Body: hex.EncodeToString(marshalSyncContact(pinned)), Op: 1, Key: k2.String(), Seqno: 7, Head: head.String(), Handle: "bob@kez.lat"},
			{Name: "ok_contact_verified", Kind: KindSyncContact, Body: hex.EncodeToString(marshalSyncContact(verified)), Op: 2, Key: k2.String(), Handle: "bob@kez.lat"},
			{Name: "fail_sent_truncated", Kind: KindSyncSent, Body: hex.EncodeToString(k2[:20])},
			{Name: "fail_sent_zero_key", Kind: KindSyncSent, Body: hex.EncodeToString(marshalSyncSent(kez.PublicKey{}, &Message{Kind: KindText, Body: []byte("x")}))},
			{Name: "fail_sent_kind_too_long", Kind: KindSyncSent, Body: hex.EncodeToString(append(append(k2[:], 40), bytes.Repeat([]byte("a"), 40)...))},
			{Name: "fail_sent_nested_sync", Kind: KindSyncSent, Body: hex.EncodeToString(marshalSyncSent(k2, &Message{Kind: KindSyncSent, Body: []byte("x")}))},
			{Name: "fail_sent_receipt", Kind: KindSyncSent, Body: hex.EncodeToString(marshalSyncSent(k2, &Message{Kind: KindReceipt}))},
			{Name: "fail_sent_text_not_utf8", Kind: KindSyncSent, Body: hex.EncodeToString(marshalSyncSent(k2, &Message{Kind: KindText, Body: []byte{0xff, 0xfe}}))},
			{Name: "fail_read_empty", Kind: KindSyncRead, Body: ""},
			{Name: "fail_read_partial_record", Kind: KindSyncRead, Body: hex.EncodeToString(marshalSyncRead([]readMark{{k1, id1}})[:47])},
			{Name: "fail_read_zero_id", Kind: KindSyncRead, Body: hex.EncodeToString(marshalSyncRead([]readMark{{k1, MessageID{}}}))},
			{Name: "fail_contact_unknown_op", Kind: KindSyncContact, Body: hex.EncodeToString(append([]byte{3}, marshalSyncContact(verified)[1:]...))},
			{Name: "fail_contact_verified_with_head", Kind: KindSyncContact, Body: hex.EncodeToString(append([]byte{2}, marshalSyncContact(pinned)[1:]...))},
			{Name: "fail_contact_pinned_without_head", Kind: KindSyncContact, Body: hex.EncodeToString(append([]byte{1}, marshalSyncContact(verified)[1:]...))},
			{Name: "fail_contact_trailing_byte", Kind: KindSyncContact, Body: hex.EncodeToString(append(marshalSyncContact(verified), 0))},
			{Name: "fail_contact_empty_handle", Kind: KindSyncContact, Body: hex.EncodeToString(marshalSyncContact(syncContact{Op: 2, Key: k2}))},
			{Name: "ok_keys_two", Kind: KindSyncKeys, Body: keysHex(recs...), Keys: kvs},
			{Name: "ok_keys_one", Kind: KindSyncKeys, Body: keysHex(recs[1]), Keys: kvs[1:]},
			{Name: "fail_keys_empty", Kind: KindSyncKeys, Body: ""},
			{Name: "fail_keys_short_record", Kind: KindSyncKeys, Body: keysHex(recs...)[:2*(2*keyRecordLen-1)]},
			{Name: "fail_keys_trailing_byte", Kind: KindSyncKeys, Body: keysHex(recs...) + "00"},
			{Name: "fail_keys_repeated_generation", Kind: KindSyncKeys, Body: keysHex(recs[0], recs[0])},
			{Name: "fail_keys_decreasing", Kind: KindSyncKeys, Body: keysHex(recs[1], recs[0])},
			{Name: "fail_keys_257_records", Kind: KindSyncKeys, Body: keysHex(many...)},
		},
	}
	b, err := json.MarshalIndent(vs, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, '\n')
	if *updateVectors {
		if err := os.WriteFile(syncVectorFile, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if file, err := os.ReadFile(syncVectorFile); err != nil || !bytes.Equal(file, b) {
		t.Fatalf("%s is not what the generator makes (%v); run the test with -update-vectors after a change of format", syncVectorFile, err)
	}
}
