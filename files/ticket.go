package files

import (
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/files/format"
	"github.com/kez-lat/kez-chat/files/internal/addrs"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// Limits and fixed parts of a ticket (docs/spec/ticket.md).
const (
	// TicketPrefix starts the text form of every ticket.
	TicketPrefix = "kezt1"
	// MaxTicketTTL is the longest a ticket may live; DefaultTicketTTL is
	// what [Sharing.Ticket] gives when asked for no particular life.
	MaxTicketTTL     = 365 * 24 * time.Hour
	DefaultTicketTTL = 7 * 24 * time.Hour
	// MaxTicketAddrs bounds the addresses of a ticket, MaxTicketAddrLen
	// the bytes of each (a multiaddr's binary form).
	MaxTicketAddrs   = addrs.MaxAddrs
	MaxTicketAddrLen = addrs.MaxLen
	// MaxTicketURLLen bounds the sig-server URL of a ticket.
	MaxTicketURLLen = 255
	// MaxTicketSize is the largest binary ticket, MaxTicketLen the
	// longest text form.
	MaxTicketSize = ticketHeadLen + 1 + maxTicketCIDLen + 16 + 1 + format.MaxNameLen + 1 + MaxTicketURLLen +
		1 + MaxTicketAddrs*(1+MaxTicketAddrLen) + ticketSigLen
	MaxTicketLen = len(TicketPrefix) + (MaxTicketSize*8+4)/5
)

const (
	ticketMagic      = "kezt"
	ticketVersion    = 1
	ticketFlagPriv   = 0x01
	ticketHeadLen    = 4 + 1 + 1 + 32 + 32 // magic, version, flags, owner, device
	ticketSigLen     = 64
	maxTicketCIDLen  = 64
	ticketExpirySkew = 24 * time.Hour // how far past MaxTicketTTL an expiry may lie (clocks differ)
	ticketMaxUnix    = 1<<53 - 1
)

// ticketEncoding is the text encoding of a ticket after its prefix: RFC
// 4648 base32, lower case, without padding.
var ticketEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// Errors of [ParseTicket]; each is wrapped with the reason.
var (
	// ErrTicketMalformed: the text is not a ticket of this version, or
	// one of its fields breaks the rules of docs/spec/ticket.md.
	ErrTicketMalformed = errors.New("files: malformed ticket")
	// ErrTicketExpired: the ticket verifies but its expiry has passed.
	// Returned as a *[TicketExpiredError].
	ErrTicketExpired = errors.New("files: the ticket expired")
	// ErrTicketSignature: the owner's signature does not verify: the
	// ticket was changed after it was signed, or signed by another key.
	ErrTicketSignature = errors.New("files: the ticket's signature does not verify")
)

// TicketExpiredError is [ErrTicketExpired] with the expiry.
type TicketExpiredError struct {
	Expires time.Time
}

// Error says when the ticket expired.
func (e *TicketExpiredError) Error() string {
	return fmt.Sprintf("files: the ticket expired on %s", e.Expires.UTC().Format(time.RFC3339))
}

// Is matches ErrTicketExpired.
func (e *TicketExpiredError) Is(target error) bool { return target == ErrTicketExpired }

// Ticket is a signed invitation to fetch one shared file
// (docs/spec/ticket.md): who owns it, which device serves it and where,
// the blob's CID and size, and until when. [ParseTicket] returns one
// whose signature verified; [SignTicket] makes the text of one.
type Ticket struct {
	// Private is set for a private entry: Name is then empty, and the
	// fetcher reads the name and key from the owner's manifest, which
	// only recipients open.
	Private bool
	// Owner is the person's primary key, which signs the ticket.
	Owner kez.PublicKey
	// Device is the serving device's key (its libp2p PeerID); Owner when
	// the primary key serves.
	Device kez.PublicKey
	// CID and Size are the blob's (the encryption's, for a private entry).
	CID  cid.Cid
	Size int64
	// Expires is when the ticket stops being valid (whole seconds).
	Expires time.Time
	// Name is the public entry's name; "" for a private one.
	Name string
	// SigServer is the base URL of the sig-server holding the owner's
	// sigchain; "" if the ticket needs none (public, served by the
	// primary key).
	SigServer string
	// Addrs are where the device listened when the ticket was made
	// (circuit addresses through relays included), 1 to MaxTicketAddrs.
	Addrs []ma.Multiaddr
}

// AddrInfo is what to dial: the device's PeerID at the ticket's addresses.
func (t *Ticket) AddrInfo() peer.AddrInfo {
	return peer.AddrInfo{ID: t.Device.PeerID(), Addrs: t.Addrs}
}

// check applies the field rules of docs/spec/ticket.md that hold whatever
// the time.
func (t *Ticket) check() error {
	switch {
	case t.Owner.IsZero() || t.Device.IsZero():
		return fmt.Errorf("%w: a zero key", ErrTicketMalformed)
	case format.CheckCID(t.CID) != nil:
		return fmt.Errorf("%w: not a KEZ blob CID", ErrTicketMalformed)
	case len(t.CID.Bytes()) > maxTicketCIDLen:
		return fmt.Errorf("%w: a CID of %d bytes", ErrTicketMalformed, len(t.CID.Bytes()))
	case t.Size < 0 || t.Size > format.MaxBlobSize:
		return fmt.Errorf("%w: a blob size of %d", ErrTicketMalformed, t.Size)
	case t.Expires.Unix() <= 0 || t.Expires.Unix() > ticketMaxUnix:
		return fmt.Errorf("%w: an expiry out of range", ErrTicketMalformed)
	case len(t.Addrs) == 0 || len(t.Addrs) > MaxTicketAddrs:
		return fmt.Errorf("%w: %d addresses (1 to %d allowed)", ErrTicketMalformed, len(t.Addrs), MaxTicketAddrs)
	}
	if t.Private {
		if t.Name != "" {
			return fmt.Errorf("%w: a private ticket names its file", ErrTicketMalformed)
		}
		if _, err := format.PlaintextSize(t.Size); err != nil {
			return fmt.Errorf("%w: %d bytes is not the size of an encrypted file", ErrTicketMalformed, t.Size)
		}
		if t.SigServer == "" {
			return fmt.Errorf("%w: a private ticket names no sig-server", ErrTicketMalformed)
		}
	} else if err := format.CheckName(t.Name); err != nil {
		return fmt.Errorf("%w: %s", ErrTicketMalformed, strings.TrimPrefix(err.Error(), format.ErrManifest.Error()+": "))
	}
	if t.Device != t.Owner && t.SigServer == "" {
		return fmt.Errorf("%w: a ticket naming a device other than the owner's key names no sig-server", ErrTicketMalformed)
	}
	if err := checkTicketURL(t.SigServer); err != nil {
		return err
	}
	for _, a := range t.Addrs {
		if a == nil {
			return fmt.Errorf("%w: a nil address", ErrTicketMalformed)
		}
		if err := checkTicketAddr(a.Bytes()); err != nil {
			return err
		}
	}
	return nil
}

// checkTicketURL checks a ticket's sig-server URL: empty, or an http or
// https URL of printable ASCII with a host and no user, query or fragment.
func checkTicketURL(s string) error {
	if s == "" {
		return nil
	}
	if len(s) > MaxTicketURLLen {
		return fmt.Errorf("%w: a sig-server URL of %d bytes", ErrTicketMalformed, len(s))
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= 0x20 || s[i] >= 0x7f {
			return fmt.Errorf("%w: the sig-server URL has a byte that is not printable ASCII", ErrTicketMalformed)
		}
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil ||
		u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(s, "#") || u.Opaque != "" {
		return fmt.Errorf("%w: the sig-server URL %q is not a plain http or https URL", ErrTicketMalformed, s)
	}
	return nil
}

// checkTicketAddr checks one address in binary form under the rules of
// signalling answers (files/internal/addrs: canonical, at most 255 bytes,
// no /p2p except a circuit address's relay).
func checkTicketAddr(b []byte) error {
	if _, err := addrs.Check(b); err != nil {
		return fmt.Errorf("%w: %w", ErrTicketMalformed, err)
	}
	return nil
}

// appendTicketBody appends the signed part of t's binary form, unchecked.
func appendTicketBody(b []byte, t *Ticket) []byte {
	b = append(b, ticketMagic...)
	flags := byte(0)
	if t.Private {
		flags |= ticketFlagPriv
	}
	b = append(b, ticketVersion, flags)
	b = append(b, t.Owner[:]...)
	b = append(b, t.Device[:]...)
	cb := t.CID.Bytes()
	b = append(b, byte(len(cb)))
	b = append(b, cb...)
	b = binary.BigEndian.AppendUint64(b, uint64(t.Size))
	b = binary.BigEndian.AppendUint64(b, uint64(t.Expires.Unix()))
	b = append(b, byte(len(t.Name)))
	b = append(b, t.Name...)
	b = append(b, byte(len(t.SigServer)))
	b = append(b, t.SigServer...)
	b = append(b, byte(len(t.Addrs)))
	for _, a := range t.Addrs {
		ab := a.Bytes()
		b = append(b, byte(len(ab)))
		b = append(b, ab...)
	}
	return b
}

// encodeTicket is the text form of a binary ticket.
func encodeTicket(b []byte) string { return TicketPrefix + ticketEncoding.EncodeToString(b) }

// SignTicket checks t against the rules of docs/spec/ticket.md and returns
// its text form signed by signer, whose key must be t.Owner. Expires is
// kept to whole seconds. Errors wrap [ErrTicketMalformed], or are the
// signer's.
func SignTicket(signer kez.Signer, t *Ticket) (string, error) {
	if signer.PublicKey() != t.Owner {
		return "", fmt.Errorf("%w: the ticket names owner %s, not the signing key %s", ErrTicketMalformed, t.Owner, signer.PublicKey())
	}
	if err := t.check(); err != nil {
		return "", err
	}
	b := appendTicketBody(make([]byte, 0, MaxTicketSize), t)
	sig, err := signer.Sign(kez.ContextTicket, b)
	if err != nil {
		return "", fmt.Errorf("files: signing the ticket: %w", err)
	}
	return encodeTicket(append(b, sig...)), nil
}

// ParseTicket decodes the text form of a ticket (docs/spec/ticket.md),
// checks every field, verifies the owner's signature and that the ticket
// has not expired at now. Errors: [ErrTicketMalformed],
// [ErrTicketSignature] (also wrapping kez.ErrBadSignature), or a
// *[TicketExpiredError] matching [ErrTicketExpired]; each says why.
func ParseTicket(s string, now time.Time) (*Ticket, error) {
	if len(s) > MaxTicketLen {
		return nil, fmt.Errorf("%w: %d characters, at most %d", ErrTicketMalformed, len(s), MaxTicketLen)
	}
	body, ok := strings.CutPrefix(s, TicketPrefix)
	if !ok {
		return nil, fmt.Errorf("%w: it does not start with %q", ErrTicketMalformed, TicketPrefix)
	}
	b, err := ticketEncoding.DecodeString(body)
	if err != nil || ticketEncoding.EncodeToString(b) != body {
		return nil, fmt.Errorf("%w: not lower-case base32 in canonical form", ErrTicketMalformed)
	}
	t, err := parseTicketBytes(b)
	if err != nil {
		return nil, err
	}
	if err := t.Owner.Verify(kez.ContextTicket, b[:len(b)-ticketSigLen], b[len(b)-ticketSigLen:]); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTicketSignature, err)
	}
	if !now.Before(t.Expires) {
		return nil, &TicketExpiredError{Expires: t.Expires}
	}
	if t.Expires.Sub(now) > MaxTicketTTL+ticketExpirySkew {
		return nil, fmt.Errorf("%w: it expires on %s, more than %d days from now", ErrTicketMalformed,
			t.Expires.UTC().Format(time.RFC3339), MaxTicketTTL/(24*time.Hour))
	}
	return t, nil
}

// ticketReader reads a binary ticket's fields in order.
type ticketReader struct {
	b   []byte
	err error
}

func (r *ticketReader) next(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n > len(r.b) {
		r.err = fmt.Errorf("%w: it ends in its %s", ErrTicketMalformed, what)
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

// short reads a 1-byte length and that many bytes.
func (r *ticketReader) short(what string) []byte {
	l := r.next(1, what)
	if l == nil {
		return nil
	}
	return r.next(int(l[0]), what)
}

// parseTicketBytes decodes and checks a binary ticket, without its
// signature or its expiry.
func parseTicketBytes(b []byte) (*Ticket, error) {
	if len(b) > MaxTicketSize {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrTicketMalformed, len(b), MaxTicketSize)
	}
	if len(b) < ticketHeadLen+ticketSigLen {
		return nil, fmt.Errorf("%w: %d bytes is too short", ErrTicketMalformed, len(b))
	}
	if string(b[:4]) != ticketMagic {
		return nil, fmt.Errorf("%w: not a ticket (bad magic)", ErrTicketMalformed)
	}
	if b[4] != ticketVersion {
		return nil, fmt.Errorf("%w: version %d (this client reads version %d)", ErrTicketMalformed, b[4], ticketVersion)
	}
	if b[5]&^ticketFlagPriv != 0 {
		return nil, fmt.Errorf("%w: unknown flags %#x", ErrTicketMalformed, b[5])
	}
	t := &Ticket{Private: b[5]&ticketFlagPriv != 0, Owner: kez.PublicKey(b[6:38]), Device: kez.PublicKey(b[38:70])}
	r := &ticketReader{b: b[ticketHeadLen : len(b)-ticketSigLen]}
	cb := r.short("CID")
	size := r.next(8, "size")
	exp := r.next(8, "expiry")
	name := r.short("name")
	sigServer := r.short("sig-server URL")
	count := r.next(1, "address count")
	if r.err != nil {
		return nil, r.err
	}
	if len(cb) == 0 || len(cb) > maxTicketCIDLen {
		return nil, fmt.Errorf("%w: a CID of %d bytes", ErrTicketMalformed, len(cb))
	}
	c, err := format.CastCID(cb)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTicketMalformed, err)
	}
	t.CID, t.Name, t.SigServer = c, string(name), string(sigServer)
	if s := binary.BigEndian.Uint64(size); s > format.MaxBlobSize {
		return nil, fmt.Errorf("%w: a blob size of %d", ErrTicketMalformed, s)
	}
	t.Size = int64(binary.BigEndian.Uint64(size))
	e := binary.BigEndian.Uint64(exp)
	if e == 0 || e > ticketMaxUnix {
		return nil, fmt.Errorf("%w: an expiry out of range", ErrTicketMalformed)
	}
	t.Expires = time.Unix(int64(e), 0).UTC()
	n := int(count[0])
	if n == 0 || n > MaxTicketAddrs {
		return nil, fmt.Errorf("%w: %d addresses (1 to %d allowed)", ErrTicketMalformed, n, MaxTicketAddrs)
	}
	for i := 0; i < n; i++ {
		ab := r.short("addresses")
		if r.err != nil {
			return nil, r.err
		}
		if err := checkTicketAddr(ab); err != nil {
			return nil, err
		}
		a, _ := ma.NewMultiaddrBytes(ab) // checked above
		t.Addrs = append(t.Addrs, a)
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the addresses where the signature was due", ErrTicketMalformed, len(r.b))
	}
	if err := t.check(); err != nil {
		return nil, err
	}
	return t, nil
}
