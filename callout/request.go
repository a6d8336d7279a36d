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
	if len(data) > MaxRequestSize {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrMalformedRequest, len(data), MaxRequestSize)
	}
	if serverXKey != "" {
		if !nkeys.IsValidPublicCurveKey(serverXKey) {
			return nil, fmt.Errorf("%w: the %s header is not a curve key", ErrMalformedRequest, ServerXKeyHeader)
		}
		if xkp == nil {
			return nil, fmt.Errorf("%w: sealed, but the service has no xkey", ErrMalformedRequest)
		}
		opened, err := xkp.Open(data, serverXKey)
		if err != nil {
			return nil, fmt.Errorf("%w: cannot open the sealed request: %v", ErrMalformedRequest, err)
		}
		data = opened
	}
	rc, err := jwt.DecodeAuthorizationRequestClaims(string(data))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedRequest, err)
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

// DenyError is a reason a login was refused. The reason goes into the
// response (nats-server logs it); the client only learns "authorization
// violation".
type DenyError struct{ Reason string }

// Error returns "callout: denied: " and the reason.
func (e *DenyError) Error() string { return "callout: denied: " + e.Reason }

func deny(format string, args ...any) error {
	return &DenyError{Reason: fmt.Sprintf(format, args...)}
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
	if opts.JWT != "" {
		return kez.PublicKey{}, deny("the client sent a user JWT; KEZ clients log in with their key only")
	}
	if opts.Nkey == "" {
		return kez.PublicKey{}, deny("the client sent no nkey; log in with your KEZ key")
	}
	key, err := kez.ParsePublicKey(opts.Nkey)
	if err != nil {
		return kez.PublicKey{}, deny("the client's nkey is not a user key: %v", err)
	}
	if ci.Nonce == "" || opts.SignedNonce == "" {
		return kez.PublicKey{}, deny("no signed nonce for %s (the server sends a nonce only when its config lists an nkey user)", key)
	}
	sig, err := decodeSig(opts.SignedNonce)
	if err != nil {
		return kez.PublicKey{}, deny("the nonce signature of %s is not base64", key)
	}
	if len(sig) != ed25519.SignatureSize || !ed25519.Verify(key.Ed25519(), []byte(ci.Nonce), sig) {
		return kez.PublicKey{}, deny("the nonce signature does not verify with %s", key)
	}
	return key, nil
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
