package sigchain

import (
	"crypto/ecdh"
	"fmt"
	"strconv"
	"strings"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/kez"
)

// Link types known to this version (docs/spec/sigchain.md, "Link types").
const (
	// TypeEldest starts every chain: primary key, X25519 encryption key and
	// an optional handle. Body: [EldestBody].
	TypeEldest = "eldest"
	// TypeSetEncryptionKey rotates the X25519 encryption key to a higher
	// generation. Body: [SetEncryptionKeyBody].
	TypeSetEncryptionKey = "set_encryption_key"
	// TypeAddClaim claims an identity on another service. Body: [AddClaimBody].
	TypeAddClaim = "add_claim"
	// TypeRevokeClaim withdraws an active claim by its link ID. Body:
	// [RevokeClaimBody].
	TypeRevokeClaim = "revoke_claim"
	// TypeSetHandle sets or releases (empty) the handle. Body: [SetHandleBody].
	TypeSetHandle = "set_handle"
	// TypeSetSharedFiles publishes the latest shared-files manifest, an
	// opaque JSON object defined by the files package (at most
	// [MaxSharedFilesBodySize] bytes).
	TypeSetSharedFiles = "set_shared_files"
)

// Limits on body fields.
const (
	// MaxHandleLen bounds a handle ("name@domain").
	MaxHandleLen = 254
	// MaxClaims bounds the active claims of one chain.
	MaxClaims = 256
	// MaxServiceLen, MaxClaimIdentityLen and MaxProofLen bound add_claim fields.
	MaxServiceLen       = 64
	MaxClaimIdentityLen = 256
	MaxProofLen         = 2048
)

// EldestBody returns the body of an eldest link. handle may be empty (no
// handle yet); encKey is the generation gen X25519 key
// ([kez.Identity.EncryptionKey]). Invalid values are reported by [NewLink].
func EldestBody(primary kez.PublicKey, encKey *ecdh.PublicKey, gen uint32, handle string) []byte {
	b := []byte(`{"encryption_generation":`)
	b = strconv.AppendUint(b, uint64(gen), 10)
	b = append(b, `,"encryption_key":`...)
	b = appendEncKey(b, encKey)
	b = append(b, `,"handle":`...)
	b = appendString(b, handle)
	b = append(b, `,"primary_key":`...)
	b = appendString(b, primary.String())
	return append(b, '}')
}

// SetEncryptionKeyBody returns the body of a set_encryption_key link. gen
// must be higher than the chain's current generation.
func SetEncryptionKeyBody(encKey *ecdh.PublicKey, gen uint32) []byte {
	b := []byte(`{"encryption_generation":`)
	b = strconv.AppendUint(b, uint64(gen), 10)
	b = append(b, `,"encryption_key":`...)
	b = appendEncKey(b, encKey)
	return append(b, '}')
}

// AddClaimBody returns the body of an add_claim link: the chain's owner
// says they are identity on service, provable at proof (a URL or other
// location the service's checker understands). The claim's ID is the link's ID.
func AddClaimBody(service, identity, proof string) []byte {
	b := []byte(`{"identity":`)
	b = appendString(b, identity)
	b = append(b, `,"proof":`...)
	b = appendString(b, proof)
	b = append(b, `,"service":`...)
	b = appendString(b, service)
	return append(b, '}')
}

// RevokeClaimBody returns the body of a revoke_claim link for the active
// claim made by the add_claim link with ID claim.
func RevokeClaimBody(claim cid.Cid) []byte {
	b := []byte(`{"claim":`)
	if d, ok := digestOf(claim); ok {
		b = append(b, '"')
		b = appendIDText(b, d)
		b = append(b, '"')
	} else {
		b = append(b, `""`...)
	}
	return append(b, '}')
}

// SetHandleBody returns the body of a set_handle link; an empty handle
// releases the current one.
func SetHandleBody(handle string) []byte {
	return append(appendString([]byte(`{"handle":`), handle), '}')
}

func appendEncKey(b []byte, k *ecdh.PublicKey) []byte {
	b = append(b, '"')
	if k != nil {
		b = b64.AppendEncode(b, k.Bytes())
	}
	return append(b, '"')
}

// bodyFields walks a canonical object and returns the raw values of exactly
// the given keys, which must be listed in sorted order.
func bodyFields(typ string, body []byte, keys ...string) ([][]byte, error) {
	vals := make([][]byte, 0, len(keys))
	i := 1 // past '{'
	for k := 0; ; k++ {
		if i < len(body) && body[i] == '}' && k == 0 {
			break
		}
		end, key, err := scanString(body, i)
		if err != nil {
			return nil, err
		}
		if k >= len(keys) || string(key) != keys[k] {
			return nil, fieldsErr(typ, keys)
		}
		vend, err := scanValue(body, end+1, 1)
		if err != nil {
			return nil, err
		}
		vals = append(vals, body[end+1:vend])
		i = vend + 1 // past ',' or '}'
		if body[vend] == '}' {
			break
		}
	}
	if len(vals) != len(keys) {
		return nil, fieldsErr(typ, keys)
	}
	return vals, nil
}

func fieldsErr(typ string, keys []string) error {
	return fmt.Errorf("the %s body has exactly the fields %s", typ, strings.Join(keys, ", "))
}

// stringValue decodes a canonical JSON string value.
func stringValue(name string, v []byte) (string, error) {
	if len(v) == 0 || v[0] != '"' {
		return "", fmt.Errorf("%s must be a string", name)
	}
	_, s, err := scanString(v, 0)
	if err != nil {
		return "", err
	}
	return string(s), nil
}

func uint32Value(name string, v []byte) (uint32, error) {
	if len(v) == 0 || v[0] == '-' || v[0] == '"' {
		return 0, fmt.Errorf("%s must be a non-negative integer", name)
	}
	n, _, err := scanInt(v, 0)
	if err != nil || n > 1<<32-1 {
		return 0, fmt.Errorf("%s must be an integer from 0 to 4294967295", name)
	}
	return uint32(n), nil
}

func encKeyValue(v []byte) (*ecdh.PublicKey, error) {
	s, err := stringValue("encryption_key", v)
	if err != nil {
		return nil, err
	}
	raw, err := b64.DecodeString(s)
	if err != nil || len(raw) != 32 {
		return nil, fmt.Errorf("encryption_key must be 32 bytes in unpadded base64url (43 characters)")
	}
	var zero [32]byte
	if string(raw) == string(zero[:]) {
		return nil, fmt.Errorf("encryption_key must not be all zeros")
	}
	k, err := ecdh.X25519().NewPublicKey(raw)
	if err != nil {
		return nil, fmt.Errorf("encryption_key: %w", err)
	}
	return k, nil
}

// CheckHandle reports whether h is acceptable as a sigchain handle:
// "name@domain", lower case, printable ASCII without spaces, exactly one
// "@", both parts non-empty, at most [MaxHandleLen] bytes. The empty
// string (no handle) is accepted. The handles package applies stricter
// rules when a handle is registered.
func CheckHandle(h string) error {
	if h == "" {
		return nil
	}
	if len(h) > MaxHandleLen {
		return fmt.Errorf("handle is %d bytes, at most %d", len(h), MaxHandleLen)
	}
	at := strings.IndexByte(h, '@')
	if at <= 0 || at == len(h)-1 || strings.IndexByte(h[at+1:], '@') >= 0 {
		return fmt.Errorf("handle %q must look like name@domain", h)
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if c <= ' ' || c > '~' || c >= 'A' && c <= 'Z' {
			return fmt.Errorf("handle %q must be lower-case printable ASCII without spaces", h)
		}
	}
	return nil
}

func checkText(name string, s string, maxLen int) error {
	if s == "" || len(s) > maxLen {
		return fmt.Errorf("%s must be 1 to %d bytes", name, maxLen)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%s must not contain control characters", name)
		}
	}
	return nil
}

func checkService(s string) error {
	if s == "" || len(s) > MaxServiceLen {
		return fmt.Errorf("service must be 1 to %d bytes", MaxServiceLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fmt.Errorf("service %q may use only a-z, 0-9, '.', '-' and '_'", s)
		}
	}
	return nil
}
