package callout

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// MaxRequestSize bounds an authorization request as received (sealed or
// not). nats-server's requests are about 1–2 KiB; a client's name and
// version strings are the only parts a client controls.
const MaxRequestSize = 16 << 10

// ErrMalformedRequest reports a request the service cannot read or whose
// origin it cannot check. Such requests get an empty reply, which
// nats-server treats as a denial.
var ErrMalformedRequest = errors.New("callout: malformed authorization request")

// ErrCannotOpen reports a sealed authorization request that the service's
// xkey does not open ("could not decrypt input"): nats-server sealed it to
// another curve key. Either the xkey in nats.conf's auth_callout block is
// not the service's, or the server is older than v2.10.4, whose nkeys
// library (v0.4.5) seals every request to a zero key. Errors wrapping it
// also wrap [ErrMalformedRequest].
var ErrCannotOpen = errors.New("callout: the sealed authorization request does not open with this xkey")

// ServerXKeyHeader is the header carrying the server's curve key when the
// request is sealed.
const ServerXKeyHeader = "Nats-Server-Xkey"

// requestAudience is the audience nats-server puts on every request.
const requestAudience = "nats-authorization-request"

// opener opens a sealed request: an nkeys.KeyPair (the service's xkey),
// or the service's xkeyBox, which keeps the shared key with each server.
type opener interface {
	Open(input []byte, sender string) ([]byte, error)
}

// openRequest checks the envelope of a request and decodes its claims: the
// size, the seal (when serverXKey is set), the server's signature and the
// claims the server always sets. issuer is the callout's issuer account
// key, which the server puts in the request's subject. Errors wrap
// [ErrMalformedRequest]. When the returned claims are not nil the caller
// may answer with a signed denial even though err is set.
func openRequest(data []byte, serverXKey string, xkp opener, issuer string) (*jwt.AuthorizationRequestClaims, error) {
	opened, err := unseal(data, serverXKey, xkp)
	if err != nil {
		return nil, err
	}
	return decodeRequest(opened, serverXKey, issuer)
}

// unseal checks the size of a request and opens its seal when serverXKey
// is set; it returns the request JWT's bytes. Errors wrap
// [ErrMalformedRequest].
func unseal(data []byte, serverXKey string, xkp opener) ([]byte, error) {
	if len(data) > MaxRequestSize {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrMalformedRequest, len(data), MaxRequestSize)
	}
	if serverXKey == "" {
		return data, nil
	}
	if !nkeys.IsValidPublicCurveKey(serverXKey) {
		return nil, fmt.Errorf("%w: the %s header is not a curve key", ErrMalformedRequest, ServerXKeyHeader)
	}
	if xkp == nil {
		return nil, fmt.Errorf("%w: sealed, but the service has no xkey", ErrMalformedRequest)
	}
	opened, err := xkp.Open(data, serverXKey)
	if err != nil {
		return nil, fmt.Errorf("%w: %w (%w)", ErrMalformedRequest, ErrCannotOpen, err)
	}
	return opened, nil
}

// decodeRequest is openRequest after the seal: data is the request JWT.
func decodeRequest(data []byte, serverXKey, issuer string) (*jwt.AuthorizationRequestClaims, error) {
	rc, err := jwt.DecodeAuthorizationRequestClaims(string(data))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformedRequest, err)
	}
	// Decode checked the signature by rc.Issuer and that it is a server
	// key. The server signs with the key whose public half is its ID.
	if rc.Server.ID != rc.Issuer {
		return nil, fmt.Errorf("%w: signed by %s but claims to come from server %q", ErrMalformedRequest, rc.Issuer, rc.Server.ID)
	}
	if !nkeys.IsValidPublicUserKey(rc.UserNkey) {
		return nil, fmt.Errorf("%w: user_nkey %q is not a user key", ErrMalformedRequest, rc.UserNkey)
	}
	// From here a signed denial can reach the server.
	if rc.Audience != requestAudience {
		return rc, fmt.Errorf("%w: audience %q, want %q", ErrMalformedRequest, rc.Audience, requestAudience)
	}
	if rc.Subject != issuer {
		return rc, fmt.Errorf("%w: addressed to issuer %q, this service is %q", ErrMalformedRequest, rc.Subject, issuer)
	}
	if serverXKey != "" && rc.Server.XKey != serverXKey {
		return rc, fmt.Errorf("%w: sealed with %s but the claims name xkey %q", ErrMalformedRequest, serverXKey, rc.Server.XKey)
	}
	vr := jwt.CreateValidationResults()
	rc.Validate(vr)
	if vr.IsBlocking(true) {
		var issues []string
		for _, i := range vr.Issues {
			issues = append(issues, i.Description)
		}
		return rc, fmt.Errorf("%w: %s", ErrMalformedRequest, strings.Join(issues, "; "))
	}
	return rc, nil
}

// DenyCode is the cause of a denial, in a word: what [Stats] and the
// chat-server's metrics count denials by.
type DenyCode string

// Denial causes.
const (
	// DenyCredentials: the client did not log in with a KEZ key and a
	// signature (no nkey, a user JWT, a malformed nkey, no or a malformed
	// nonce signature).
	DenyCredentials DenyCode = "credentials"
	// DenyUnknownKey: no handle is registered for the key.
	DenyUnknownKey DenyCode = "unknown_key"
	// DenyBadSignature: the nonce signature does not verify with the key.
	DenyBadSignature DenyCode = "bad_signature"
	// DenySuspended: the key's handle is suspended.
	DenySuspended DenyCode = "suspended"
	// DenyRevoked: the key is a device its person revoked.
	DenyRevoked DenyCode = "revoked"
	// DenyPolicy: the [Authorizer] refused the login.
	DenyPolicy DenyCode = "policy"
	// DenyFailed: the service could not decide (the directory failed);
	// not a [DenyError], but counted with the denials.
	DenyFailed DenyCode = "error"
)

// DenyCodes lists every [DenyCode], in a fixed order.
var DenyCodes = []DenyCode{DenyCredentials, DenyUnknownKey, DenyBadSignature, DenySuspended, DenyRevoked, DenyPolicy, DenyFailed}

// DenyError is a reason a login was refused. The reason goes into the
// response (nats-server logs it); the client only learns "authorization
// violation".
type DenyError struct {
	Reason string
	Code   DenyCode // the cause, in a word
}

// Error returns "callout: denied: " and the reason.
func (e *DenyError) Error() string { return "callout: denied: " + e.Reason }

func deny(code DenyCode, format string, args ...any) error {
	return &DenyError{Reason: fmt.Sprintf(format, args...), Code: code}
}

// VerifyNonce checks that the client proved possession of the key it
// claims: opts.SignedNonce must be an ed25519 signature by opts.Nkey over
// the ASCII nonce the server sent (ci.Nonce). The signature may be
// base64 raw-URL (what nats.go sends) or standard base64, as nats-server
// itself accepts. It returns the verified key, or a [*DenyError].
//
// nats-server does not make this check when an auth callout is
// configured: without it anyone could claim anyone's key.
func VerifyNonce(opts jwt.ConnectOptions, ci jwt.ClientInformation) (kez.PublicKey, error) {
	key, sig, err := parseCredentials(opts, ci)
	if err != nil {
		return kez.PublicKey{}, err
	}
	if err := verifyNonce(key, sig, ci.Nonce); err != nil {
		return kez.PublicKey{}, err
	}
	return key, nil
}

// parseCredentials reads the key and the nonce signature a client sent,
// without verifying anything: the cheap half of [VerifyNonce]. Errors are
// [*DenyError]s with [DenyCredentials].
func parseCredentials(opts jwt.ConnectOptions, ci jwt.ClientInformation) (kez.PublicKey, []byte, error) {
	if opts.JWT != "" {
		return kez.PublicKey{}, nil, deny(DenyCredentials, "the client sent a user JWT; KEZ clients log in with their key only")
	}
	if opts.Nkey == "" {
		return kez.PublicKey{}, nil, deny(DenyCredentials, "the client sent no nkey; log in with your KEZ key")
	}
	key, err := kez.ParsePublicKey(opts.Nkey)
	if err != nil {
		return kez.PublicKey{}, nil, deny(DenyCredentials, "the client's nkey is not a user key: %v", err)
	}
	if ci.Nonce == "" || opts.SignedNonce == "" {
		return kez.PublicKey{}, nil, deny(DenyCredentials, "no signed nonce for %s (the server sends a nonce only when its config lists an nkey user)", key)
	}
	sig, err := decodeSig(opts.SignedNonce)
	if err != nil {
		return kez.PublicKey{}, nil, deny(DenyCredentials, "the nonce signature of %s is not base64", key)
	}
	return key, sig, nil
}

// verifyNonce is the ed25519 half of [VerifyNonce].
func verifyNonce(key kez.PublicKey, sig []byte, nonce string) error {
	if len(sig) != ed25519.SignatureSize || !ed25519.Verify(key[:], []byte(nonce), sig) {
		return deny(DenyBadSignature, "the nonce signature does not verify with %s", key)
	}
	return nil
}

func decodeSig(s string) ([]byte, error) {
	if len(s) > 2*ed25519.SignatureSize+8 {
		return nil, errors.New("too long")
	}
	if b, err := base64.RawURLEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	return base64.StdEncoding.DecodeString(s)
}
