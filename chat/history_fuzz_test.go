package chat

import (
	"bytes"
	"errors"
	"testing"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
)

// FuzzDecodeHistoryBody feeds the sync-history parser. Whatever it
// accepts re-encodes to the same payload (one encoding per chunk), and
// the contacts' links go through the chain verifier without a panic.
func FuzzDecodeHistoryBody(f *testing.F) {
	me, peer := stacktest.Identity("alice").PublicKey(), stacktest.Identity("bob").PublicKey()
	in := &Entry{ID: MessageID{1}, From: peer, To: me, Incoming: true, SentAt: t0, ReceivedAt: t0, Kind: KindText, Body: []byte("hi"), Trust: TrustRequest, PeerHandle: "bob@kez.lat"}
	out := &Entry{ID: MessageID{2}, From: me, To: peer, SentAt: t0, ReceivedAt: t0, Kind: "file.offer", Ref: MessageID{1}, Body: []byte{0, 1}, Trust: TrustTrusted, State: StateSent, Read: true, DeliveredAt: t0}
	ct := &historyContact{Handle: "bob@kez.lat", SigServer: "https://sig.kez.lat", AddedAt: t0, Refreshed: t0, VerifiedAt: t0,
		Flag: FlagKeyChanged, FlagDetail: "seen", FlagKey: me, FlaggedAt: t0, Links: [][]byte{[]byte(`{"body":{}}`)}}
	var items []*historyItem
	for _, e := range []*Entry{in, out} {
		w := &historyWriter{}
		w.message(e)
		items = append(items, &historyItem{enc: w.b})
	}
	w := &historyWriter{}
	w.contact(ct)
	items = append([]*historyItem{{contact: true, enc: w.b}}, items...)
	payload := chunkPayload(items, [16]byte{9}, 3, true)
	f.Add(encodeHistoryBody(payload))
	f.Add(append([]byte(historyMagic+"\x00"), payload...))
	f.Add(append([]byte(historyMagic+"\x00"), chunkPayload(nil, [16]byte{}, 0, false)...))
	f.Add([]byte(historyMagic + "\x01"))
	f.Fuzz(func(t *testing.T, body []byte) {
		ch, err := decodeHistoryBody(body, me)
		if err != nil {
			if !errors.Is(err, ErrBadHistoryChunk) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		var again []*historyItem
		for i := range ch.Contacts {
			w := &historyWriter{}
			w.contact(&ch.Contacts[i])
			again = append(again, &historyItem{contact: true, enc: w.b})
			if _, _, err := verifyContactChain(&ch.Contacts[i]); err != nil && !errors.Is(err, ErrBadHistoryChunk) {
				t.Fatalf("unclassified chain error: %v", err)
			}
		}
		for _, e := range ch.Messages {
			if len(e.Body) > MaxBodySize || (e.Incoming && e.To != me) || (!e.Incoming && e.From != me) {
				t.Fatalf("accepted %+v", e)
			}
			w := &historyWriter{}
			w.message(e)
			again = append(again, &historyItem{enc: w.b})
		}
		got := chunkPayload(again, ch.Transfer, ch.Index, ch.Last)
		if body[len(historyMagic)] == compressNone && !bytes.Equal(got, body[historyHeader:]) {
			t.Fatalf("non-canonical chunk accepted:\n%x\nre-encodes as\n%x", body[historyHeader:], got)
		}
		if _, err := decodeHistoryBody(encodeHistoryBody(got), me); err != nil {
			t.Fatalf("re-encoded chunk refused: %v", err)
		}
	})
}
