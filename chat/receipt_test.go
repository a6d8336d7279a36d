package chat

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/kez-lat/kez-chat/internal/testenv/vectorid"
)

type receiptVector struct {
	Name   string   `json:"name"`
	Ref    string   `json:"ref"`
	Body   string   `json:"body"`
	Status string   `json:"status"`
	IDs    []string `json:"ids"`
	Error  string   `json:"error"`
}

func loadReceiptVectors(tb testing.TB) []receiptVector {
	tb.Helper()
	b, err := os.ReadFile("testdata/receipt-vectors.json")
	if err != nil {
		tb.Fatal(err)
	}
	var doc struct {
		Vectors []receiptVector `json:"vectors"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		tb.Fatal(err)
	}
	return doc.Vectors
}

func mustID(tb testing.TB, s string) MessageID {
	tb.Helper()
	if strings.Trim(s, "0") == "" && len(s) == 32 {
		return MessageID{}
	}
	id, err := ParseMessageID(s)
	if err != nil {
		tb.Fatal(err)
	}
	return id
}

func TestReceiptVectors(t *testing.T) {
	vs := loadReceiptVectors(t)
	if len(vs) < 10 {
		t.Fatalf("only %d vectors", len(vs))
	}
	for _, v := range vs {
		t.Run(v.Name, func(t *testing.T) {
			ref := mustID(t, v.Ref)
			r, err := parseReceiptBody(ref, []byte(v.Body))
			if strings.HasPrefix(v.Name, "fail_") {
				if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), v.Error) {
					t.Fatalf("got %+v, %v; want an error with %q", r, err, v.Error)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var ids []MessageID
			for _, s := range v.IDs {
				ids = append(ids, mustID(t, s))
			}
			if r.Status != v.Status || !slices.Equal(r.IDs, ids) {
				t.Fatalf("got %+v, want status %q ids %v", r, v.Status, v.IDs)
			}
			body, err := r.marshalBody()
			if err != nil || string(body) != v.Body {
				t.Fatalf("marshal: %q, %v; want %q", body, err, v.Body)
			}
			// Through a real envelope too.
			alice, bob := vectorid.Identity(t, "alice"), vectorid.Identity(t, "bob")
			m, err := r.message()
			if err != nil {
				t.Fatal(err)
			}
			opened, err := mustOpener(t, bob).Open(mustSeal(t, alice, recipientOf(bob, 0), m), alice.PublicKey())
			if err != nil {
				t.Fatal(err)
			}
			back, err := ParseReceipt(opened)
			if err != nil || back.Status != r.Status || !slices.Equal(back.IDs, r.IDs) {
				t.Fatalf("through an envelope: %+v, %v", back, err)
			}
		})
	}
}

func TestReceiptLimits(t *testing.T) {
	ids := make([]MessageID, MaxReceiptIDs+1)
	for i := range ids {
		ids[i] = NewMessageID()
	}
	if _, err := (Receipt{Status: ReceiptDelivered, IDs: ids}).marshalBody(); !errors.Is(err, ErrMalformed) {
		t.Errorf("marshal %d IDs: %v", len(ids), err)
	}
	full, err := (Receipt{Status: ReceiptDelivered, IDs: ids[:MaxReceiptIDs]}).marshalBody()
	if err != nil {
		t.Fatal(err)
	}
	if r, err := parseReceiptBody(ids[0], full); err != nil || len(r.IDs) != MaxReceiptIDs {
		t.Fatalf("the largest receipt: %d IDs, %v", len(r.IDs), err)
	}
	// fail_too_many_ids: one ID more than allowed.
	over := append(bytes.Clone(full), '\n')
	over = append(over, ids[MaxReceiptIDs].String()...)
	if _, err := parseReceiptBody(ids[0], over); !errors.Is(err, ErrMalformed) {
		t.Errorf("%d IDs accepted: %v", MaxReceiptIDs+1, err)
	}
	if _, err := ParseReceipt(&Message{Kind: KindText, Ref: ids[0]}); !errors.Is(err, ErrMalformed) {
		t.Errorf("a text message parsed as a receipt: %v", err)
	}
	if _, err := (Receipt{Status: "OK", IDs: ids[:1]}).message(); !errors.Is(err, ErrMalformed) {
		t.Errorf("a bad status was written: %v", err)
	}
}

// FuzzParseReceipt checks that any receipt body either fails with
// ErrMalformed or parses into a receipt whose canonical form is the body.
func FuzzParseReceipt(f *testing.F) {
	for _, v := range loadReceiptVectors(f) {
		id, _ := ParseMessageID(v.Ref)
		f.Add(id[:], []byte(v.Body))
	}
	f.Add(make([]byte, 16), []byte("delivered\n\n"))
	f.Add([]byte{1}, []byte("x"))
	f.Fuzz(func(t *testing.T, ref, body []byte) {
		var id MessageID
		copy(id[:], ref)
		r, err := parseReceiptBody(id, body)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		if len(r.IDs) == 0 || r.IDs[0] != id || len(r.IDs) > MaxReceiptIDs {
			t.Fatalf("parsed %+v for ref %s", r, id)
		}
		back, err := r.marshalBody()
		if err != nil || !bytes.Equal(back, body) {
			t.Fatalf("not canonical: %q parsed to %+v, written back as %q (%v)", body, r, back, err)
		}
	})
}
