package format

import (
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
)

// A FileKey never prints: fmt (every verb), log/slog and encoding/json
// show "format.FileKey(redacted)" (or "format.FileKey(none)" for the zero
// key of a public entry), so printing an [Entry] or a list of them does
// not give a private file away. Use the key's bytes (k[:]) where they are
// meant to go.

// String returns "format.FileKey(redacted)", or "format.FileKey(none)"
// for the zero key.
func (k FileKey) String() string {
	if k == (FileKey{}) {
		return "format.FileKey(none)"
	}
	return "format.FileKey(redacted)"
}

// GoString is String, for %#v.
func (k FileKey) GoString() string { return k.String() }

// Format prints String for every verb (%x included).
func (k FileKey) Format(f fmt.State, _ rune) { io.WriteString(f, k.String()) }

// LogValue logs String.
func (k FileKey) LogValue() slog.Value { return slog.StringValue(k.String()) }

// MarshalJSON encodes String as a JSON string, never the key.
func (k FileKey) MarshalJSON() ([]byte, error) { return strconv.AppendQuote(nil, k.String()), nil }

// Format prints the entry as fmt prints its fields, the key as FileKey
// prints it, for every verb: also where fmt would print the fields
// without their methods (a verb that does not apply to a pointer, as %s
// to a *Entry in a slice).
func (e Entry) Format(f fmt.State, verb rune) {
	type entry Entry // the fields, without this method
	formatFields(f, verb, "format.Entry", entry(e))
}

// formatFields prints v, a struct without methods that holds the fields
// of a type called name, with f's verb and flags (%#v names the type
// name).
func formatFields(f fmt.State, verb rune, name string, v any) {
	s := fmt.Sprintf(fmt.FormatString(f, verb), v)
	if verb == 'v' && f.Flag('#') {
		s = name + strings.TrimPrefix(s, fmt.Sprintf("%T", v))
	}
	io.WriteString(f, s)
}
