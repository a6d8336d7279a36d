package files

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/kez-lat/kez-chat/files/format"
)

// A Sharing holds the user's identity: it prints as
// "files.Sharing(<public key>)" for every verb and in logs. A [Fetched]
// prints its fields, the file key redacted as format.FileKey prints it.

// String returns "files.Sharing(<the user's key>)".
func (s *Sharing) String() string { return "files.Sharing(" + s.me.String() + ")" }

// GoString is String, for %#v.
func (s *Sharing) GoString() string { return s.String() }

// Format prints String for every verb.
func (s *Sharing) Format(f fmt.State, _ rune) { io.WriteString(f, s.String()) }

// LogValue logs String.
func (s *Sharing) LogValue() slog.Value { return slog.StringValue(s.String()) }

// Format prints the entry and the path as fmt prints the fields of a
// Fetched (the embedded Entry's Format would print the entry alone).
func (fe Fetched) Format(f fmt.State, verb rune) {
	fields := struct {
		Entry format.Entry
		Path  string
	}{fe.Entry, fe.Path}
	s := fmt.Sprintf(fmt.FormatString(f, verb), fields)
	if verb == 'v' && f.Flag('#') {
		s = "files.Fetched" + strings.TrimPrefix(s, fmt.Sprintf("%T", fields))
	}
	io.WriteString(f, s)
}
