package claims

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/btcsuite/btcd/btcec/v2/schnorr"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/nbd-wtf/go-nostr"
	"github.com/nbd-wtf/go-nostr/nip19"
)

// Limits of a nostr claim's event.
const (
	// NostrKind is the kind of a claim's event (a NIP-01 text note).
	NostrKind = 1
	// NostrTag is the name of the tag that carries the chain's key.
	NostrTag = "kez"
	// MaxNostrEventLen bounds an event's JSON (an add_claim proof's limit).
	MaxNostrEventLen = sigchain.MaxProofLen
	// MaxNostrTags bounds an event's tags, and MaxNostrTagLen each tag's
	// number of strings.
	MaxNostrTags   = 16
	MaxNostrTagLen = 8
)

// nostrEvent is an event's JSON object, fields in the sorted order of
// canonical JSON.
type nostrEvent struct {
	Content   string     `json:"content"`
	CreatedAt int64      `json:"created_at"`
	ID        string     `json:"id"`
	Kind      int        `json:"kind"`
	PubKey    string     `json:"pubkey"`
	Sig       string     `json:"sig"`
	Tags      [][]string `json:"tags"`
}

// NostrEvent makes the proof of a nostr claim: a NIP-01 event (kind 1,
// content the statement's text, one tag ["kez", <key>]) created now and
// signed by the nostr secret key nsec (its bech32 "nsec1…" form), as
// canonical JSON. nsec must be the key of st.Identity.
func NostrEvent(nsec string, st Statement) (string, error) {
	return nostrEventAt(nsec, st, time.Now())
}

// nostrEventAt is [NostrEvent] at a given time; opts may fix BIP-340's
// auxiliary randomness (for test vectors).
func nostrEventAt(nsec string, st Statement, now time.Time, opts ...schnorr.SignOption) (string, error) {
	prefix, v, err := decodeNsec(nsec)
	if err != nil || prefix != "nsec" {
		return "", fmt.Errorf("%w: not an nsec key", ErrBadIdentity)
	}
	pub, err := nostr.GetPublicKey(v)
	if err != nil || !nostr.IsValidPublicKey(pub) {
		return "", fmt.Errorf("%w: not a valid nostr secret key", ErrBadIdentity)
	}
	want, ok := npubKey(st.Identity)
	if !ok {
		return "", fmt.Errorf("%w: nostr %q", ErrBadIdentity, truncate(st.Identity, 64))
	}
	if pub != want {
		return "", fmt.Errorf("%w: the nostr secret key is not %s's", ErrWrongKey, st.Identity)
	}
	ev := nostr.Event{
		CreatedAt: nostr.Timestamp(now.Unix()),
		Kind:      NostrKind,
		Tags:      nostr.Tags{{NostrTag, st.Key.String()}},
		Content:   st.Text(),
	}
	if err := ev.Sign(v, opts...); err != nil {
		return "", fmt.Errorf("claims: signing the nostr event: %w", err)
	}
	return string(marshalNostrEvent(&ev)), nil
}

// decodeNsec decodes an nsec, refusing any other bech32 kind before
// decoding it.
func decodeNsec(s string) (string, string, error) {
	if len(s) != 63 || s[:5] != "nsec1" {
		return "", "", fmt.Errorf("not an nsec")
	}
	prefix, v, err := nip19.Decode(s)
	if err != nil {
		return "", "", err
	}
	h, ok := v.(string)
	if !ok {
		return "", "", fmt.Errorf("not an nsec")
	}
	return prefix, h, nil
}

// marshalNostrEvent writes ev as canonical JSON.
func marshalNostrEvent(ev *nostr.Event) []byte {
	tags := make([][]string, len(ev.Tags))
	for i, t := range ev.Tags {
		tags[i] = t
	}
	b, _ := json.Marshal(nostrEvent{Content: ev.Content, CreatedAt: int64(ev.CreatedAt), ID: ev.ID, Kind: ev.Kind,
		PubKey: ev.PubKey, Sig: ev.Sig, Tags: tags}) // strings and numbers always marshal
	return b
}

// ParseNostrEvent parses a nostr claim's proof: one NIP-01 event as
// canonical JSON (docs/spec/sigchain.md §1: sorted keys, no whitespace)
// with exactly the fields content, created_at, id, kind, pubkey, sig and
// tags, at most [MaxNostrEventLen] bytes, [MaxNostrTags] tags of 1 to
// [MaxNostrTagLen] strings, id, pubkey and sig in lower-case hex of 32, 32
// and 64 bytes, created_at from 0 to 2^53-1. It checks neither the id nor
// the signature ([CheckNostrEvent] does). The error wraps
// [ErrBadStatement]. Write an event from elsewhere in the canonical form
// with sigchain.Canonicalize first.
func ParseNostrEvent(proof string) (*nostr.Event, error) {
	bad := func(format string, a ...any) (*nostr.Event, error) {
		return nil, fmt.Errorf("%w: the nostr event: %s", ErrBadStatement, fmt.Sprintf(format, a...))
	}
	if len(proof) > MaxNostrEventLen {
		return bad("%d bytes, the limit is %d", len(proof), MaxNostrEventLen)
	}
	var e nostrEvent
	d := json.NewDecoder(bytes.NewReader([]byte(proof)))
	d.DisallowUnknownFields()
	if err := d.Decode(&e); err != nil {
		return bad("not an event object")
	}
	switch {
	case e.CreatedAt < 0 || e.CreatedAt > maxSeqno:
		return bad("created_at out of range")
	case e.Kind < 0 || e.Kind > 65535:
		return bad("kind out of range")
	case !lowerHex(e.ID, 32) || !lowerHex(e.PubKey, 32) || !lowerHex(e.Sig, 64):
		return bad("id, pubkey and sig must be lower-case hex of 32, 32 and 64 bytes")
	case e.Tags == nil || len(e.Tags) > MaxNostrTags:
		return bad("want a tags array of at most %d tags", MaxNostrTags)
	}
	tags := make(nostr.Tags, len(e.Tags))
	for i, t := range e.Tags {
		if len(t) == 0 || len(t) > MaxNostrTagLen {
			return bad("a tag must have 1 to %d strings", MaxNostrTagLen)
		}
		tags[i] = t
	}
	ev := &nostr.Event{ID: e.ID, PubKey: e.PubKey, CreatedAt: nostr.Timestamp(e.CreatedAt), Kind: e.Kind,
		Tags: tags, Content: e.Content, Sig: e.Sig}
	// Only the canonical form: no whitespace, sorted unique keys, the one
	// escaping of every string, so that one event has one proof text.
	if !bytes.Equal(marshalNostrEvent(ev), []byte(proof)) {
		return bad("not in canonical JSON form")
	}
	return ev, nil
}

// lowerHex reports whether s is n bytes in lower-case hex.
func lowerHex(s string, n int) bool {
	if len(s) != 2*n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// CheckNostrEvent checks a parsed nostr claim event against the claim of
// npub whose statement is st: kind 1, the id is the NIP-01 hash of the
// event, the BIP-340 signature verifies with the event's pubkey, which is
// npub's key (else [ErrWrongKey]), the content is exactly st's text, and a
// tag is exactly ["kez", st.Key] (else [ErrBadStatement]).
func CheckNostrEvent(ev *nostr.Event, npub string, st Statement) error {
	want, ok := npubKey(npub)
	if !ok {
		return fmt.Errorf("%w: nostr %q", ErrBadIdentity, truncate(npub, 64))
	}
	switch {
	case ev.Kind != NostrKind:
		return fmt.Errorf("%w: the nostr event is of kind %d, not %d", ErrBadStatement, ev.Kind, NostrKind)
	case ev.Content != st.Text():
		return fmt.Errorf("%w: the nostr event's content is not the statement", ErrBadStatement)
	case !hasTag(ev.Tags, NostrTag, st.Key.String()):
		return fmt.Errorf("%w: the nostr event has no tag [%q, %q]", ErrBadStatement, NostrTag, st.Key)
	case ev.PubKey != want:
		return fmt.Errorf("%w: the nostr event is signed by another nostr key than %s", ErrWrongKey, npub)
	case len(ev.ID) != 64 || !ev.CheckID():
		return fmt.Errorf("%w: the nostr event's id is not its hash", ErrBadSignature)
	}
	if ok, err := ev.CheckSignature(); err != nil || !ok {
		return fmt.Errorf("%w: the nostr event's signature does not verify", ErrBadSignature)
	}
	return nil
}

func hasTag(tags nostr.Tags, name, value string) bool {
	for _, t := range tags {
		if len(t) == 2 && t[0] == name && t[1] == value {
			return true
		}
	}
	return false
}
