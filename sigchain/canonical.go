package sigchain

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"unicode/utf8"
)

// Canonical JSON (docs/spec/sigchain.md, "Canonical JSON"): the one byte
// form a link body may take. No insignificant whitespace; object keys sorted
// by their UTF-8 bytes, no duplicates; integers only, in
// [-(2^53-1), 2^53-1], without leading zeros or "-0"; strings are valid
// UTF-8 and escape exactly `"` `\` \b \f \n \r \t (short forms), the other
// bytes below 0x20 and < > & U+2028 U+2029 as \u00xx / \u2028 / \u2029 with
// lower-case hex, and nothing else. These are the rules Go's encoding/json
// uses for strings, so compacting canonical bytes with encoding/json leaves
// them unchanged.

const (
	// maxDepth bounds nesting of arrays and objects in a body.
	maxDepth = 16
	// maxSafeInt is 2^53-1, the largest integer every JSON reader keeps exact.
	maxSafeInt = 1<<53 - 1
)

// errCanon is wrapped by every canonical-form violation.
var errCanon = errors.New("not canonical JSON")

func canonErr(i int, format string, a ...any) error {
	return fmt.Errorf("%w at byte %d: %s", errCanon, i, fmt.Sprintf(format, a...))
}

// scanValue checks the canonical value starting at b[i] and returns the
// index just past it.
func scanValue(b []byte, i, depth int) (int, error) {
	if i >= len(b) {
		return i, canonErr(i, "unexpected end of input")
	}
	switch c := b[i]; {
	case c == '{':
		return scanObject(b, i, depth+1)
	case c == '[':
		if depth+1 > maxDepth {
			return i, canonErr(i, "nested deeper than %d", maxDepth)
		}
		i++
		if i < len(b) && b[i] == ']' {
			return i + 1, nil
		}
		for {
			var err error
			if i, err = scanValue(b, i, depth+1); err != nil {
				return i, err
			}
			if i >= len(b) {
				return i, canonErr(i, "unterminated array")
			}
			switch b[i] {
			case ',':
				i++
			case ']':
				return i + 1, nil
			default:
				return i, canonErr(i, "want ',' or ']', got %q", b[i])
			}
		}
	case c == '"':
		end, _, err := scanString(b, i)
		return end, err
	case c == 't':
		return scanLiteral(b, i, "true")
	case c == 'f':
		return scanLiteral(b, i, "false")
	case c == 'n':
		return scanLiteral(b, i, "null")
	case c == '-' || c >= '0' && c <= '9':
		_, end, err := scanInt(b, i)
		return end, err
	default:
		return i, canonErr(i, "unexpected %q", c)
	}
}

func scanLiteral(b []byte, i int, lit string) (int, error) {
	if !bytes.HasPrefix(b[i:], []byte(lit)) {
		return i, canonErr(i, "want %s", lit)
	}
	return i + len(lit), nil
}

// scanObject checks a canonical object at b[i] (which is '{').
func scanObject(b []byte, i, depth int) (int, error) {
	if depth > maxDepth {
		return i, canonErr(i, "nested deeper than %d", maxDepth)
	}
	i++
	if i < len(b) && b[i] == '}' {
		return i + 1, nil
	}
	var prev []byte
	first := true
	for {
		if i >= len(b) || b[i] != '"' {
			return i, canonErr(i, "want an object key")
		}
		end, key, err := scanString(b, i)
		if err != nil {
			return end, err
		}
		if !first && bytes.Compare(prev, key) >= 0 {
			if bytes.Equal(prev, key) {
				return i, canonErr(i, "duplicate key %q", key)
			}
			return i, canonErr(i, "key %q is out of order (keys are sorted by their UTF-8 bytes)", key)
		}
		prev, first = key, false
		i = end
		if i >= len(b) || b[i] != ':' {
			return i, canonErr(i, "want ':'")
		}
		if i, err = scanValue(b, i+1, depth); err != nil {
			return i, err
		}
		if i >= len(b) {
			return i, canonErr(i, "unterminated object")
		}
		switch b[i] {
		case ',':
			i++
		case '}':
			return i + 1, nil
		default:
			return i, canonErr(i, "want ',' or '}', got %q", b[i])
		}
	}
}

// scanString checks the canonical string at b[i] (which is '"') and returns
// the index past its closing quote and its decoded value. The value aliases
// b when the string has no escapes.
func scanString(b []byte, i int) (end int, val []byte, err error) {
	start := i + 1
	var dec []byte // nil until the first escape
	for j := start; j < len(b); {
		c := b[j]
		switch {
		case c == '"':
			if dec == nil {
				return j + 1, b[start:j], nil
			}
			return j + 1, dec, nil
		case c == '\\':
			if dec == nil {
				dec = append(make([]byte, 0, j-start+8), b[start:j]...)
			}
			r, n, err := scanEscape(b, j)
			if err != nil {
				return j, nil, err
			}
			dec = utf8.AppendRune(dec, r)
			j += n
		case c < 0x20:
			return j, nil, canonErr(j, "control byte 0x%02x must be escaped", c)
		case c == '<' || c == '>' || c == '&':
			return j, nil, canonErr(j, "%q must be written as \\u00%02x", c, c)
		case c < utf8.RuneSelf:
			if dec != nil {
				dec = append(dec, c)
			}
			j++
		default:
			r, n := utf8.DecodeRune(b[j:])
			if r == utf8.RuneError && n <= 1 {
				return j, nil, canonErr(j, "invalid UTF-8")
			}
			if r == '\u2028' || r == '\u2029' {
				return j, nil, canonErr(j, "U+%04X must be escaped", r)
			}
			if dec != nil {
				dec = append(dec, b[j:j+n]...)
			}
			j += n
		}
	}
	return len(b), nil, canonErr(i, "unterminated string")
}

// scanEscape checks one escape at b[j] (which is '\') and returns the rune
// and the escape's length.
func scanEscape(b []byte, j int) (rune, int, error) {
	if j+1 >= len(b) {
		return 0, 0, canonErr(j, "unterminated escape")
	}
	switch b[j+1] {
	case '"':
		return '"', 2, nil
	case '\\':
		return '\\', 2, nil
	case 'b':
		return '\b', 2, nil
	case 'f':
		return '\f', 2, nil
	case 'n':
		return '\n', 2, nil
	case 'r':
		return '\r', 2, nil
	case 't':
		return '\t', 2, nil
	case 'u':
		if j+6 > len(b) {
			return 0, 0, canonErr(j, "short \\u escape")
		}
		var r rune
		for _, h := range b[j+2 : j+6] {
			switch {
			case h >= '0' && h <= '9':
				r = r<<4 | rune(h-'0')
			case h >= 'a' && h <= 'f':
				r = r<<4 | rune(h-'a'+10)
			default:
				return 0, 0, canonErr(j, "\\u escapes use lower-case hex digits")
			}
		}
		if !mustEscapeU(r) {
			return 0, 0, canonErr(j, "\\u%04x must not be escaped this way", r)
		}
		return r, 6, nil
	default:
		return 0, 0, canonErr(j, "escape \\%c is not allowed", b[j+1])
	}
}

// mustEscapeU reports whether r is written as a \u escape in canonical form.
func mustEscapeU(r rune) bool {
	switch r {
	case '\b', '\f', '\n', '\r', '\t':
		return false
	case '<', '>', '&', '\u2028', '\u2029':
		return true
	}
	return r < 0x20
}

// scanInt checks a canonical integer at b[i].
func scanInt(b []byte, i int) (int64, int, error) {
	start, neg := i, false
	if b[i] == '-' {
		neg = true
		i++
	}
	if i >= len(b) || b[i] < '0' || b[i] > '9' {
		return 0, i, canonErr(i, "want a digit")
	}
	if b[i] == '0' {
		i++
		if neg {
			return 0, i, canonErr(start, "-0 is not canonical")
		}
		if i < len(b) && (b[i] >= '0' && b[i] <= '9') {
			return 0, i, canonErr(start, "leading zero")
		}
		if i < len(b) && (b[i] == '.' || b[i] == 'e' || b[i] == 'E') {
			return 0, i, canonErr(start, "only integers are allowed")
		}
		return 0, i, nil
	}
	var v int64
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		v = v*10 + int64(b[i]-'0')
		if v > maxSafeInt {
			return 0, i, canonErr(start, "integer out of range ±(2^53-1)")
		}
	}
	if i < len(b) && (b[i] == '.' || b[i] == 'e' || b[i] == 'E') {
		return 0, i, canonErr(start, "only integers are allowed")
	}
	if neg {
		v = -v
	}
	return v, i, nil
}

// checkCanonicalObject reports whether b is exactly one canonical JSON
// object.
func checkCanonicalObject(b []byte) error {
	if len(b) == 0 || b[0] != '{' {
		return fmt.Errorf("%w: a body must be a JSON object", errCanon)
	}
	end, err := scanObject(b, 0, 1)
	if err != nil {
		return err
	}
	if end != len(b) {
		return canonErr(end, "trailing bytes after the object")
	}
	return nil
}

// Canonicalize rewrites any JSON object into its canonical form (sorted
// keys, no whitespace, canonical strings and integers), so callers can hand
// the output of [encoding/json.Marshal] to [NewLink]. It rejects
// non-integer numbers, integers beyond ±(2^53-1), duplicate keys, nesting
// deeper than 16, trailing data and invalid UTF-8. Canonicalizing canonical
// bytes returns them unchanged.
func Canonicalize(js []byte) ([]byte, error) {
	if !utf8.Valid(js) {
		return nil, fmt.Errorf("sigchain: body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	out, err := canonValue(dec, nil, 0)
	if err != nil {
		return nil, fmt.Errorf("sigchain: canonicalizing body: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("sigchain: canonicalizing body: trailing data after the JSON value")
	}
	if len(out) == 0 || out[0] != '{' {
		return nil, fmt.Errorf("sigchain: a body must be a JSON object")
	}
	return out, nil
}

func canonValue(dec *json.Decoder, dst []byte, depth int) ([]byte, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		if depth+1 > maxDepth {
			return nil, fmt.Errorf("nested deeper than %d", maxDepth)
		}
		if t == '[' {
			dst = append(dst, '[')
			for n := 0; dec.More(); n++ {
				if n > 0 {
					dst = append(dst, ',')
				}
				if dst, err = canonValue(dec, dst, depth+1); err != nil {
					return nil, err
				}
			}
			if _, err := dec.Token(); err != nil {
				return nil, err
			}
			return append(dst, ']'), nil
		}
		// Object: collect members, then write them sorted.
		type member struct {
			key string
			val []byte
		}
		var ms []member
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return nil, err
			}
			k, _ := kt.(string)
			v, err := canonValue(dec, nil, depth+1)
			if err != nil {
				return nil, err
			}
			ms = append(ms, member{k, v})
		}
		if _, err := dec.Token(); err != nil {
			return nil, err
		}
		slices.SortStableFunc(ms, func(a, b member) int { return compareStrings(a.key, b.key) })
		dst = append(dst, '{')
		for i, m := range ms {
			if i > 0 {
				if ms[i-1].key == m.key {
					return nil, fmt.Errorf("duplicate key %q", m.key)
				}
				dst = append(dst, ',')
			}
			dst = appendString(dst, m.key)
			dst = append(dst, ':')
			dst = append(dst, m.val...)
		}
		return append(dst, '}'), nil
	case string:
		return appendString(dst, t), nil
	case json.Number:
		v, err := strconv.ParseInt(string(t), 10, 64)
		if err != nil || v > maxSafeInt || v < -maxSafeInt {
			return nil, fmt.Errorf("number %s is not an integer within ±(2^53-1)", t)
		}
		return strconv.AppendInt(dst, v, 10), nil
	case bool:
		return strconv.AppendBool(dst, t), nil
	case nil:
		return append(dst, "null"...), nil
	}
	return nil, fmt.Errorf("unexpected token %v", tok)
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a canonical JSON string. s must be valid UTF-8.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\b':
				dst = append(dst, '\\', 'b')
			case c == '\f':
				dst = append(dst, '\\', 'f')
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c < 0x20 || c == '<' || c == '>' || c == '&':
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		switch r {
		case '\u2028':
			dst = append(dst, `\u2028`...)
		case '\u2029':
			dst = append(dst, `\u2029`...)
		default:
			dst = append(dst, s[i:i+n]...)
		}
		i += n
	}
	return append(dst, '"')
}
