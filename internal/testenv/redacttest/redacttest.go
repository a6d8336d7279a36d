// Package redacttest checks, for the tests of the packages that hold
// secrets, that a value never prints them: not with any fmt verb, not in
// slog's text or JSON output, not in encoding/json, not even inside a
// struct, a slice or a pointer.
//
//	redacttest.Check(t, id, redacttest.Bytes(id.Seed())...)
package redacttest

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"testing"

	"github.com/kez-lat/kez-chat/kez"
)

// Bytes returns the forms a secret's bytes take when printed: hex (both
// cases), base64 (standard, URL, with and without padding), Go's decimal
// list ("[12 200 …]" without its brackets), and the hex of its first 8
// bytes (a prefix printed alone).
func Bytes(secret []byte) []string {
	if len(secret) == 0 {
		return nil
	}
	h := hex.EncodeToString(secret)
	out := []string{
		h, strings.ToUpper(h),
		base64.StdEncoding.EncodeToString(secret), base64.RawStdEncoding.EncodeToString(secret),
		base64.URLEncoding.EncodeToString(secret), base64.RawURLEncoding.EncodeToString(secret),
		strings.Trim(fmt.Sprint(secret), "[]"),
	}
	if len(secret) > 8 {
		out = append(out, hex.EncodeToString(secret[:8]))
	}
	return out
}

// Outputs returns what v prints as, each under a name: every fmt verb
// that prints a value (%v %+v %#v %s %q %x %X %d), Sprint and Sprintln,
// slog's text and JSON handlers (as an attribute, inside a group, and in
// a struct), and encoding/json (v, a struct holding it, a slice of it).
// The same is done for a pointer to v, the value v points to (if v is a
// pointer and that value is a fmt.Formatter), a struct whose exported
// field holds v and a slice of v.
func Outputs(v any) map[string]string {
	out := map[string]string{}
	type holder struct {
		Secret any
		Name   string
	}
	ptr := reflect.New(reflect.TypeOf(v))
	ptr.Elem().Set(reflect.ValueOf(v))
	vals := map[string]any{
		"value":     v,
		"pointer":   ptr.Interface(),
		"in struct": holder{Secret: v, Name: "x"},
		"in slice":  []any{v, v},
	}
	// What v points to, if it redacts too (a pointer-only type's value,
	// full of locks, is not copied).
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Pointer && !rv.IsNil() && rv.Elem().Type().Implements(formatter) {
		vals["pointed to"] = rv.Elem().Interface()
	}
	for vn, val := range vals {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
			out[vn+" "+verb] = fmt.Sprintf(verb, val)
		}
		out[vn+" Sprint"] = fmt.Sprint(val)
		out[vn+" Sprintln"] = fmt.Sprintln(val)
		var text, js bytes.Buffer
		for _, h := range []slog.Handler{slog.NewTextHandler(&text, nil), slog.NewJSONHandler(&js, nil)} {
			log := slog.New(h)
			log.Info("redaction check", "v", val)
			log.Info("redaction check", slog.Group("g", slog.Any("v", val)))
			log.With("v", val).Info("redaction check")
		}
		out[vn+" slog text"] = text.String()
		out[vn+" slog JSON"] = js.String()
		if b, err := json.Marshal(val); err == nil {
			out[vn+" json"] = string(b)
		} else {
			out[vn+" json"] = err.Error()
		}
	}
	return out
}

var formatter = reflect.TypeFor[fmt.Formatter]()

// Check fails t if any of [Outputs](v) contains one of the forbidden
// strings (see [Bytes]).
func Check(t testing.TB, v any, forbidden ...string) {
	t.Helper()
	if len(forbidden) == 0 {
		t.Fatal("redacttest: nothing to look for")
	}
	for name, got := range Outputs(v) {
		for _, f := range forbidden {
			if f != "" && strings.Contains(got, f) {
				t.Errorf("%T printed with %s shows a secret (%q): %s", v, name, f, got)
			}
		}
	}
}

// Identity returns the forms of id's secrets (see [Bytes]): its seed, its
// ed25519 private key and its first encryption keys.
func Identity(id *kez.Identity) []string {
	var out []string
	for _, b := range [][]byte{id.Seed(), id.Ed25519PrivateKey().Seed(), id.EncryptionKey(0).Bytes(), id.EncryptionKey(1).Bytes()} {
		out = append(out, Bytes(b)...)
	}
	return out
}
