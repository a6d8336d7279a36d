package claims

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/nbd-wtf/go-nostr"
	"github.com/nbd-wtf/go-nostr/nip19"
)

// Services a claim can name.
const (
	// ServiceDNS: the identity is a DNS name; the statement is published
	// in a TXT record at _kez.<name>.
	ServiceDNS = "dns"
	// ServiceHTTPS: the identity is a host (optionally :port); the
	// statement is published at https://<host>/.well-known/kez-claim.
	ServiceHTTPS = "https"
	// ServiceNostr: the identity is an npub; the proof is a NIP-01 event
	// signed by that nostr key whose content is the statement.
	ServiceNostr = "nostr"
)

// MaxStatementLen bounds a statement's text, so that it fits one DNS TXT
// string.
const MaxStatementLen = 255

// textPrefix starts every statement's text.
const textPrefix = "kez-claim=v1"

// maxSeqno is the largest seqno canonical JSON can carry (2^53-1).
const maxSeqno = 1<<53 - 1

// Statement is what a chain's key signs to claim an identity: the key, the
// service and identity, and the position of the add_claim link that
// carries it (its seqno and the ID of the link before it), so that a
// statement made for one claim never checks out for another.
type Statement struct {
	Key      kez.PublicKey
	Service  string
	Identity string
	Seqno    uint64 // the add_claim link's seqno
	Prev     string // the add_claim link's prev: the ID text of the link before it
	Sig      []byte // ed25519, by Key, under kez.ContextClaim over [Statement.Payload]
}

// NewStatement signs a statement for a claim of identity on service that
// the add_claim link at seqno, after the link prev, will carry.
// Invalid values give a statement that [ParseStatement] and the checks
// refuse; check the identity first with [CheckIdentity].
func NewStatement(id *kez.Identity, service, identity string, seqno uint64, prev string) Statement {
	s := Statement{Key: id.PublicKey(), Service: service, Identity: identity, Seqno: seqno, Prev: prev}
	s.Sig, _ = id.Sign(kez.ContextClaim, s.Payload()) // the context is valid
	return s
}

// Payload returns the bytes the signature covers: canonical JSON
// {"identity":…,"key":…,"prev":…,"seqno":…,"service":…}.
func (s Statement) Payload() []byte {
	b := []byte(`{"identity":`)
	b = appendJSONString(b, s.Identity)
	b = append(b, `,"key":"`...)
	b = append(b, s.Key.String()...)
	b = append(b, `","prev":`...)
	b = appendJSONString(b, s.Prev)
	b = append(b, `,"seqno":`...)
	b = strconv.AppendUint(b, s.Seqno, 10)
	b = append(b, `,"service":`...)
	b = appendJSONString(b, s.Service)
	return append(b, '}')
}

// appendJSONString appends s as a JSON string, escaped as canonical JSON
// requires (encoding/json's rules).
func appendJSONString(b []byte, s string) []byte {
	j, _ := json.Marshal(s) // a string always marshals
	return append(b, j...)
}

// Text returns the statement's one-line text form, the one published:
// "kez-claim=v1 <key> <seqno> <prev> <sig>", the signature in unpadded
// base64url.
func (s Statement) Text() string {
	return textPrefix + " " + s.Key.String() + " " + strconv.FormatUint(s.Seqno, 10) + " " + s.Prev + " " +
		base64.RawURLEncoding.EncodeToString(s.Sig)
}

// Verify checks the statement's signature by its key. The error wraps
// [ErrBadSignature].
func (s Statement) Verify() error {
	if err := s.Key.Verify(kez.ContextClaim, s.Payload(), s.Sig); err != nil {
		return fmt.Errorf("%w: %w", ErrBadSignature, err)
	}
	return nil
}

// ParseStatement parses a statement's text for a claim of identity on
// service. Only the exact form [Statement.Text] writes is accepted (at
// most [MaxStatementLen] bytes, single spaces, canonical numbers and
// encodings); the error wraps [ErrBadStatement], or [ErrUnsupported] or
// [ErrBadIdentity] for the service and identity. It does not verify the
// signature ([Statement.Verify]).
func ParseStatement(text, service, identity string) (Statement, error) {
	if err := CheckIdentity(service, identity); err != nil {
		return Statement{}, err
	}
	bad := func(format string, a ...any) (Statement, error) {
		return Statement{}, fmt.Errorf("%w: %s", ErrBadStatement, fmt.Sprintf(format, a...))
	}
	if len(text) > MaxStatementLen {
		return bad("%d bytes, the limit is %d", len(text), MaxStatementLen)
	}
	for i := 0; i < len(text); i++ {
		if text[i] < 0x20 || text[i] > 0x7e {
			return bad("a byte 0x%02x that is not printable ASCII", text[i])
		}
	}
	f := strings.Split(text, " ")
	if len(f) != 5 || f[0] != textPrefix {
		return bad("want %q and four fields separated by single spaces", textPrefix)
	}
	key, err := kez.ParsePublicKey(f[1])
	if err != nil {
		return bad("the key: %v", err)
	}
	seqno, err := strconv.ParseUint(f[2], 10, 64)
	if err != nil || strconv.FormatUint(seqno, 10) != f[2] || seqno < 2 || seqno > maxSeqno {
		return bad("the seqno %q is not a decimal number from 2 to 2^53-1 without leading zeros", truncate(f[2], 24))
	}
	if _, err := sigchain.ParseID(f[3]); err != nil {
		return bad("the prev: %v", err)
	}
	sig, err := base64.RawURLEncoding.Strict().DecodeString(f[4])
	if err != nil || len(sig) != 64 {
		return bad("the signature is not 64 bytes of unpadded base64url")
	}
	return Statement{Key: key, Service: service, Identity: identity, Seqno: seqno, Prev: f[3], Sig: sig}, nil
}

// CheckIdentity reports whether identity is valid for service: for dns a
// DNS name of lower-case letters, digits and hyphens (labels of 1 to 63
// bytes, not starting or ending with a hyphen; at most 253 bytes, no
// trailing dot, the last label not all digits); for https such a name or an IPv4 or bracketed IPv6
// address in its canonical form, optionally followed by ":port" (IP
// addresses and ports are accepted only for local domains when checked);
// for nostr an npub (bech32 of a valid 32-byte x-only key, lower case).
// The error wraps [ErrBadIdentity] or [ErrUnsupported].
func CheckIdentity(service, identity string) error {
	var ok bool
	switch service {
	case ServiceDNS:
		ok = validDNSName(identity)
	case ServiceHTTPS:
		_, _, ok = splitHTTPSIdentity(identity)
	case ServiceNostr:
		_, ok = npubKey(identity)
	default:
		return fmt.Errorf("%w: %q", ErrUnsupported, truncate(service, 64))
	}
	if !ok {
		return fmt.Errorf("%w: %s %q", ErrBadIdentity, service, truncate(identity, 64))
	}
	return nil
}

// validDNSName reports whether s is lower-case LDH labels, at most 253
// bytes, the last one not all digits (so that no name looks like an IPv4
// address).
func validDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	if strings.Trim(s[strings.LastIndexByte(s, '.')+1:], "0123456789") == "" {
		return false
	}
	for l := range strings.SplitSeq(s, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// splitHTTPSIdentity splits an https identity into its host (a DNS name or
// an IP address, IPv6 without brackets) and port ("" if none), and reports
// whether it is valid.
func splitHTTPSIdentity(s string) (host, port string, ok bool) {
	if len(s) > 253+8 {
		return "", "", false
	}
	rest := s
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", "", false
		}
		host, rest = s[1:end], s[end+1:]
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" || a.String() != host {
			return "", "", false
		}
		if rest != "" && rest[0] != ':' {
			return "", "", false
		}
	} else {
		host, rest = s, ""
		if i := strings.LastIndexByte(s, ':'); i >= 0 {
			host, rest = s[:i], s[i:]
		}
		if a, err := netip.ParseAddr(host); err == nil {
			if !a.Is4() || a.String() != host {
				return "", "", false
			}
		} else if !validDNSName(host) {
			return "", "", false
		}
	}
	if rest != "" {
		port = rest[1:]
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 || strconv.FormatUint(n, 10) != port {
			return "", "", false
		}
	}
	return host, port, true
}

// npubKey returns the hex x-only key of an npub, if s is one in its
// canonical lower-case form and names a valid secp256k1 point.
func npubKey(s string) (string, bool) {
	if len(s) != 63 || !strings.HasPrefix(s, "npub1") {
		return "", false
	}
	prefix, v, err := nip19.Decode(s)
	if err != nil || prefix != "npub" {
		return "", false
	}
	hexKey, ok := v.(string)
	if !ok || !nostr.IsValidPublicKey(hexKey) {
		return "", false
	}
	if again, err := nip19.EncodePublicKey(hexKey); err != nil || again != s {
		return "", false
	}
	return hexKey, true
}

// truncate shortens s for an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
