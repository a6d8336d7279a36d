package handles

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/kez-lat/kez-chat/internal/httpjson"
	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/kez"
)

// WebFinger link relations and properties (docs/spec/handles.md §4). They
// are identifiers, never fetched.
const (
	// RelKey is the link whose properties carry the handle's primary key.
	RelKey = "https://kez.lat/rel/key"
	// RelSigchain is the link whose href is the key's chain at its sig-server.
	RelSigchain = "https://kez.lat/rel/sigchain"
	// PropKey is the RelKey property holding the key as nkey text ("U…").
	PropKey = "https://kez.lat/ns/key"
	// PropFingerprint is the RelKey property holding the key's fingerprint.
	PropFingerprint = "https://kez.lat/ns/fingerprint"
)

// JRDContentType is the media type of a WebFinger answer (RFC 7033).
const JRDContentType = "application/jrd+json"

// maxAnswer bounds a lookup or WebFinger answer a client reads.
const maxAnswer = 64 << 10

// LookupRecord is the JSON answer of GET /v1/handles/{name} and of a
// successful claim.
type LookupRecord struct {
	Handle      string `json:"handle"`      // canonical form
	Key         string `json:"key"`         // nkey text
	Fingerprint string `json:"fingerprint"` // of Key
	// EncryptionKey (unpadded base64url X25519) and EncryptionGeneration
	// are what the key's chain published at the last claim: a hint only.
	EncryptionKey        string    `json:"encryption_key,omitempty"`
	EncryptionGeneration uint32    `json:"encryption_generation"`
	SigchainURL          string    `json:"sigchain_url"` // GET it for the key's chain
	ClaimedAt            time.Time `json:"claimed_at"`
}

func lookupRecord(r Record, sigchainURL string) LookupRecord {
	lr := LookupRecord{
		Handle:               r.Handle.String(),
		Key:                  r.Key.String(),
		Fingerprint:          r.Key.Fingerprint(),
		EncryptionGeneration: r.Generation,
		SigchainURL:          sigchainURL,
		ClaimedAt:            r.ClaimedAt.UTC(),
	}
	if len(r.EncryptionKey) > 0 {
		lr.EncryptionKey = base64.RawURLEncoding.EncodeToString(r.EncryptionKey)
	}
	return lr
}

// JRD is a WebFinger JSON Resource Descriptor (RFC 7033 §4.4).
type JRD struct {
	Subject    string             `json:"subject"`
	Aliases    []string           `json:"aliases,omitempty"`
	Properties map[string]*string `json:"properties,omitempty"`
	Links      []JRDLink          `json:"links,omitempty"`
}

// JRDLink is one link of a [JRD].
type JRDLink struct {
	Rel        string             `json:"rel"`
	Type       string             `json:"type,omitempty"`
	Href       string             `json:"href,omitempty"`
	Titles     map[string]string  `json:"titles,omitempty"`
	Properties map[string]*string `json:"properties,omitempty"`
}

// Link returns the first link with relation rel, or nil.
func (j *JRD) Link(rel string) *JRDLink {
	for i := range j.Links {
		if j.Links[i].Rel == rel {
			return &j.Links[i]
		}
	}
	return nil
}

// ChainURL returns the URL of key's chain at the sig-server with base URL
// sigServer: sigServer + "/v1/chains/" + key.
func ChainURL(sigServer string, key kez.PublicKey) string {
	return strings.TrimRight(sigServer, "/") + wire.ChainsPath + key.String()
}

// sigServerOf checks that chainURL is an absolute http(s) URL of key's
// chain (as [ChainURL] makes it) and returns the sig-server's base URL.
func sigServerOf(chainURL string, key kez.PublicKey) (string, error) {
	suffix := wire.ChainsPath + key.String()
	base, ok := strings.CutSuffix(chainURL, suffix)
	if !ok {
		return "", fmt.Errorf("the sigchain URL %q is not the chain of %s", chainURL, key)
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("the sigchain URL %q is not an absolute http(s) URL", chainURL)
	}
	return base, nil
}

// errorBody is every error answer: {"error": "...", "reason": "..."},
// and for a claim refused as taken also "existing": the handle held.
type errorBody struct {
	Error    string `json:"error"`
	Reason   Reason `json:"reason,omitempty"`
	Existing string `json:"existing,omitempty"`
}

func writeError(w http.ResponseWriter, status int, err error) {
	body := errorBody{Error: err.Error(), Reason: ReasonOf(err)}
	var te *TakenError
	if errors.As(err, &te) {
		body.Reason, body.Existing = te.Reason(), te.Holder.String()
	}
	httpjson.Write(w, status, body)
}
