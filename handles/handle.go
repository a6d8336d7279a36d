package handles

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits of the handle rules (docs/spec/handles.md).
const (
	MinNameLen   = 2   // shortest local name
	MaxNameLen   = 32  // longest local name
	MaxDomainLen = 253 // longest domain, as in DNS
	// MaxInputLen bounds the text any parser in this package reads: longer
	// input is refused before it is looked at.
	MaxInputLen = 320
)

// Handle is a checked, normalised handle: a local name and the home
// server's domain, both lower case ASCII. The zero value is not a handle.
// Compare handles with ==.
type Handle struct {
	Name   string // local name, e.g. "alice"
	Domain string // home server domain, e.g. "kez.lat" (or "127.0.0.1:8080" in development)
}

// String returns the canonical form "alice@kez.lat", the form signed in
// claims and sigchains and stored in registries.
func (h Handle) String() string { return h.Name + "@" + h.Domain }

// Display returns the form shown to people: "@alice@kez.lat".
func (h Handle) Display() string { return "@" + h.String() }

// Acct returns the WebFinger resource of the handle: "acct:alice@kez.lat".
func (h Handle) Acct() string { return "acct:" + h.String() }

// IsZero reports whether h is the zero value.
func (h Handle) IsZero() bool { return h == Handle{} }

// Rules are the settings a handle is parsed under. The zero value parses
// full handles only, with production domain rules. Rules are plain values,
// safe for concurrent use.
type Rules struct {
	// DefaultDomain completes a bare name ("alice"). Empty: bare names are
	// refused with [ReasonNoDomain].
	DefaultDomain string
	// AllowLocal accepts development domains: "localhost", IP literals and
	// a ":port" suffix (e.g. "127.0.0.1:8080"). Never set it in production.
	AllowLocal bool
}

// Parse parses a handle with production domain rules: "@alice@kez.lat",
// "alice@kez.lat", or a bare "alice" (or "@alice") completed with
// defaultDomain. See [Rules.Parse].
func Parse(s, defaultDomain string) (Handle, error) {
	return Rules{DefaultDomain: defaultDomain}.Parse(s)
}

// Parse parses and normalises a handle. It accepts "@alice@kez.lat",
// "alice@kez.lat", "alice" and "@alice" (the last two take
// r.DefaultDomain); ASCII letters are lowered and spaces, tabs and line
// breaks around the text are ignored. Anything else is refused with a
// *[HandleError] whose Reason says why, look-alike tricks included.
// It does not refuse reserved names: see [CheckClaimable].
func (r Rules) Parse(s string) (Handle, error) {
	in := s
	s = strings.Trim(s, " \t\r\n")
	if err := checkText(in, s); err != nil {
		return Handle{}, err
	}
	s = strings.ToLower(s)
	if len(s) > 1 && s[0] == '@' {
		s = s[1:] // "@alice@kez.lat" and "@alice"
	}
	name, domain, full := strings.Cut(s, "@")
	if strings.Contains(domain, "@") {
		return Handle{}, herr(in, ReasonBadForm, "it has more than one @ after the name; write name@domain")
	}
	if !full {
		if r.DefaultDomain == "" {
			return Handle{}, herr(in, ReasonNoDomain, "it has no domain; write name@domain")
		}
		domain = r.DefaultDomain
	} else if domain == "" {
		return Handle{}, herr(in, ReasonBadForm, "nothing follows the @; write name@domain")
	}
	if err := checkName(in, name); err != nil {
		return Handle{}, err
	}
	d, err := parseDomain(in, domain, r.AllowLocal)
	if err != nil {
		return Handle{}, err
	}
	return Handle{Name: name, Domain: d}, nil
}

// ParseDomain checks and normalises a server domain with the same rules as
// the domain part of a handle. allowLocal accepts development domains (see
// [Rules.AllowLocal]). Errors are *[HandleError].
func ParseDomain(s string, allowLocal bool) (string, error) {
	if err := checkText(s, s); err != nil {
		return "", err
	}
	return parseDomain(s, strings.ToLower(s), allowLocal)
}

// checkText bounds the input and refuses every non-ASCII trick before the
// structure is looked at, so a look-alike gets its precise reason.
func checkText(in, s string) error {
	if len(in) > MaxInputLen {
		return &HandleError{Input: in, Reason: ReasonTooLong, Detail: fmt.Sprintf("it is %d bytes long; at most %d are read", len(in), MaxInputLen)}
	}
	if s == "" {
		return herr(in, ReasonEmpty, "it is empty")
	}
	if !utf8.ValidString(s) {
		return herr(in, ReasonInvalidUTF8, "it is not valid UTF-8 text")
	}
	// A letter of another script is "mixed" when Latin letters share its
	// part of the text (the name or the domain).
	hasLatin := func(i int) bool {
		start := strings.LastIndexByte(s[:i], '@') + 1
		end := strings.IndexByte(s[i:], '@')
		if end < 0 {
			end = len(s)
		} else {
			end += i
		}
		for _, c := range []byte(s[start:end]) {
			if c |= 0x20; c >= 'a' && c <= 'z' {
				return true
			}
		}
		return false
	}
	for i, c := range s {
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f {
				return herr(in, ReasonBadCharacter, fmt.Sprintf("it contains the control character U+%04X at byte %d", c, i))
			}
			continue
		}
		reason, what := classify(c, hasLatin(i))
		return herr(in, reason, fmt.Sprintf("it contains U+%04X at byte %d, %s", c, i, what))
	}
	return nil
}

func checkName(in, name string) error {
	switch {
	case name == "":
		return herr(in, ReasonBadForm, "the name before the @ is empty")
	case len(name) < MinNameLen:
		return herr(in, ReasonTooShort, fmt.Sprintf("the name %q is shorter than %d characters", name, MinNameLen))
	case len(name) > MaxNameLen:
		return herr(in, ReasonTooLong, fmt.Sprintf("the name is %d characters long; at most %d are allowed", len(name), MaxNameLen))
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if isNameChar(c) {
			continue
		}
		if !isSeparator(c) {
			return herr(in, ReasonBadCharacter, fmt.Sprintf("the name contains %q; a name uses only a-z, 0-9 and . - _ between them", c))
		}
		switch {
		case i == 0:
			return herr(in, ReasonBadSeparator, fmt.Sprintf("the name starts with %q; . - _ may only stand between letters or digits", c))
		case i == len(name)-1:
			return herr(in, ReasonBadSeparator, fmt.Sprintf("the name ends with %q; . - _ may only stand between letters or digits", c))
		case isSeparator(name[i-1]):
			return herr(in, ReasonBadSeparator, fmt.Sprintf("the name has %q twice in a row; . - _ may only stand between letters or digits", name[i-1:i+1]))
		}
	}
	return nil
}

func isNameChar(c byte) bool  { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }
func isSeparator(c byte) bool { return c == '.' || c == '-' || c == '_' }

// parseDomain checks a lower-cased ASCII domain.
func parseDomain(in, d string, allowLocal bool) (string, error) {
	if d == "" {
		return "", herr(in, ReasonBadDomain, "the domain is empty")
	}
	if len(d) > MaxDomainLen {
		return "", herr(in, ReasonBadDomain, fmt.Sprintf("the domain is %d characters long; at most %d are allowed", len(d), MaxDomainLen))
	}
	host := d
	if strings.HasPrefix(d, "[") || strings.Contains(d, ":") {
		if !allowLocal {
			return "", herr(in, ReasonLocalDomain, fmt.Sprintf("the domain %q has a port or an IP address; those are only accepted in development", d))
		}
		h, port, ok := splitHostPort(d)
		if !ok {
			return "", herr(in, ReasonBadDomain, fmt.Sprintf("the domain %q is not host:port with a port from 1 to 65535", d))
		}
		if strings.HasPrefix(h, "[") {
			a, err := netip.ParseAddr(strings.Trim(h, "[]"))
			if err != nil || !a.Is6() || a.Zone() != "" || !strings.HasSuffix(h, "]") {
				return "", herr(in, ReasonBadDomain, fmt.Sprintf("the domain %q is not a valid [IPv6]:port", d))
			}
			return "[" + a.String() + "]:" + port, nil
		}
		host = h
	}
	if a, err := netip.ParseAddr(host); err == nil && a.Is4() {
		if !allowLocal {
			return "", herr(in, ReasonLocalDomain, fmt.Sprintf("the domain %q is an IP address; those are only accepted in development", d))
		}
		if a.String() != host {
			return "", herr(in, ReasonBadDomain, fmt.Sprintf("the IP address %q is not in its plain dotted form", host))
		}
		return d, nil
	}
	labels := strings.Split(host, ".")
	for _, l := range labels {
		if err := checkLabel(in, host, l); err != nil {
			return "", err
		}
	}
	last := labels[len(labels)-1]
	local := last == "localhost"
	switch {
	case local && !allowLocal:
		return "", herr(in, ReasonLocalDomain, fmt.Sprintf("the domain %q is local; it is only accepted in development", d))
	case len(labels) < 2 && !allowLocal:
		return "", herr(in, ReasonBadDomain, fmt.Sprintf("the domain %q has no dot; write a full domain such as kez.lat", d))
	case allDigits(last):
		return "", herr(in, ReasonBadDomain, fmt.Sprintf("the domain %q ends in a number, which is neither a domain nor an IP address", d))
	}
	return d, nil
}

func checkLabel(in, host, l string) error {
	switch {
	case l == "":
		return herr(in, ReasonBadDomain, fmt.Sprintf("the domain %q has an empty label (a dot at the start or end, or two in a row)", host))
	case len(l) > 63:
		return herr(in, ReasonBadDomain, fmt.Sprintf("the domain %q has a label longer than 63 characters", host))
	case strings.HasPrefix(l, "xn--"):
		return herr(in, ReasonIDNA, fmt.Sprintf("the domain %q has the punycode label %q; internationalised domains are not supported in v0", host, l))
	case l[0] == '-' || l[len(l)-1] == '-':
		return herr(in, ReasonBadDomain, fmt.Sprintf("the domain label %q starts or ends with a hyphen", l))
	}
	for i := 0; i < len(l); i++ {
		if c := l[i]; !isNameChar(c) && c != '-' {
			return herr(in, ReasonBadDomain, fmt.Sprintf("the domain %q contains %q; a domain uses only a-z, 0-9, - and dots", host, c))
		}
	}
	return nil
}

// splitHostPort splits "host:port" or "[v6]:port" with a port of 1–65535
// written without leading zeros.
func splitHostPort(d string) (host, port string, ok bool) {
	i := strings.LastIndexByte(d, ':')
	if i <= 0 {
		return "", "", false
	}
	host, port = d[:i], d[i+1:]
	if strings.Contains(host, ":") && !strings.HasPrefix(host, "[") {
		return "", "", false
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 || strconv.FormatUint(n, 10) != port {
		return "", "", false
	}
	return host, port, true
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
