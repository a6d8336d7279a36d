package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/kez-lat/kez-chat/files/format"
	"github.com/kez-lat/kez-chat/handles"
)

func init() {
	register(&command{
		name:    "whois",
		args:    "HANDLE [--json] [--server URL] [--home DIR]",
		summary: "look someone up and verify their sigchain",
		help: `
Resolves a handle (alice, @alice@kez.lat or alice@kez.lat) to a key and
verifies it on this machine: the handle's home server says which key holds
it (your own chat-server for your domain, WebFinger for other domains),
the key's sigchain is fetched from the sig-server and checked link by link,
and the answer is accepted only if the chain claims exactly that handle.

It shows the handle, the key (the NATS user nkey), the PeerID, the
fingerprint to compare with its owner, the X25519 encryption key, the
chain's length and head, the owner's claims on other services and whether
they share files, and the devices the chain lists (its primary key
itself, and each device it added, revoked or not: messages to this person
are sealed to each current one). Each claim (dns, https, nostr) is
checked live: "verified" when its proof, a statement signed by this key
for this claim, is where the claim says (the TXT record at _kez.DOMAIN,
https://HOST/.well-known/kez-claim, a nostr event signed by the npub);
"failed: REASON" when it is not, or names another key or another claim;
"not checked yet" when the check did not finish. A claim of a service kez
does not check is only its owner's word.

--json prints one object: {"handle","key","peer_id","fingerprint",
"encryption_key","encryption_generation","sigchain_url","seqno","head",
"claims":[{"id","service","identity","proof","status","reason",
"checked_at"}],"shared_files","devices":
[{"name","key","fingerprint","primary","added_seqno","revoked"}]} where
shared_files is null or {"seqno","bytes","public":[{"name","size","cid"}],
"private"} (private: how many entries only their recipients can read);
a claim's status is verified, failed or unchecked, its reason says why it
failed, checked_at is null when it was not checked.

A bare name takes your home domain: KEZ_DOMAIN, else your profile's, else
the one your chat-server (--server or KEZ_SERVER) serves.`,
		flags: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			var home string
			var asJSON bool
			var sf serverFlags
			fs.BoolVar(&asJSON, "json", false, "print JSON")
			fs.StringVar(&home, "home", "", homeFlagHelp)
			fs.StringVar(&sf.server, "server", "", "chat-server base URL (env KEZ_SERVER; default: the one in your profile)")
			return func(ctx context.Context, args []string) error {
				if len(args) != 1 {
					return usagef("whois takes one HANDLE, got %d arguments", len(args))
				}
				return runWhois(ctx, e, home, sf, args[0], asJSON)
			}
		},
	})
}

// whoisJSON is the --json output of "kez whois"; fields may be added.
type whoisJSON struct {
	Handle               string           `json:"handle"`
	Key                  string           `json:"key"`
	PeerID               string           `json:"peer_id"`
	Fingerprint          string           `json:"fingerprint"`
	EncryptionKey        string           `json:"encryption_key"` // unpadded base64url X25519
	EncryptionGeneration uint32           `json:"encryption_generation"`
	SigchainURL          string           `json:"sigchain_url"`
	Seqno                uint64           `json:"seqno"`
	Head                 string           `json:"head"`
	Claims               []whoisClaim     `json:"claims"`
	SharedFiles          *whoisSharedFile `json:"shared_files"`
	Devices              []whoisDevice    `json:"devices"`
}

// whoisDevice is one device the sigchain lists.
type whoisDevice struct {
	Name        string `json:"name"`
	Key         string `json:"key"`
	Fingerprint string `json:"fingerprint"`
	Primary     bool   `json:"primary"`
	AddedSeqno  uint64 `json:"added_seqno"`
	Revoked     bool   `json:"revoked"`
}

// whoisClaim is one claim of a chain with its live check.
type whoisClaim struct {
	ID        string     `json:"id"`
	Service   string     `json:"service"`
	Identity  string     `json:"identity"`
	Proof     string     `json:"proof"`
	Status    string     `json:"status"`     // verified, failed or unchecked
	Reason    string     `json:"reason"`     // why it failed; "" otherwise
	CheckedAt *time.Time `json:"checked_at"` // null: not checked
}

type whoisSharedFile struct {
	Seqno   uint64      `json:"seqno"`           // the set_shared_files link
	Bytes   int         `json:"bytes"`           // size of its body
	Public  []whoisFile `json:"public"`          // the public entries
	Private int         `json:"private"`         // entries only their recipients can read
	Error   string      `json:"error,omitempty"` // why the manifest does not decode
}

type whoisFile struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
	CID  string `json:"cid"`
}

// sharedFiles describes the manifest of a set_shared_files link.
func sharedFiles(seqno uint64, body []byte) *whoisSharedFile {
	sf := &whoisSharedFile{Seqno: seqno, Bytes: len(body), Public: []whoisFile{}}
	m, err := format.DecodeManifest(body)
	if err != nil {
		sf.Error = err.Error()
		return sf
	}
	for _, e := range m.Public {
		sf.Public = append(sf.Public, whoisFile{Name: e.Name, Size: e.Size, CID: e.CID.String()})
	}
	sf.Private = len(m.Sealed)
	return sf
}

// homeResolver returns a resolver whose home is the user's chat-server and
// domain (see settleServers); without either, only full handles of other
// domains resolve (through WebFinger over HTTPS).
func (e *env) homeResolver(ctx context.Context, homeFlag string, sf serverFlags) (*handles.Resolver, error) {
	home, err := e.home(homeFlag)
	if err != nil {
		return nil, err
	}
	prof, err := loadProfile(home)
	if err != nil {
		return nil, err
	}
	srv, err := e.settleServers(ctx, sf, prof, false)
	if err != nil {
		return nil, err
	}
	r := e.resolver(srv)
	if r.Log, err = e.accountLog(home); err != nil {
		return nil, err
	}
	return r, nil
}

// resolver returns a resolver, without a cache, whose home is srv.
func (e *env) resolver(srv servers) *handles.Resolver {
	return &handles.Resolver{
		DefaultDomain: srv.domain,
		HomeServer:    srv.server,
		HTTPClient:    httpClient,
		AllowLocal:    e.allowLocal(srv.domain),
		LocalDomains:  e.localDomains(),
		TTL:           -1,
		Claims:        e.claimChecker(),
	}
}

func runWhois(ctx context.Context, e *env, homeFlag string, sf serverFlags, handle string, asJSON bool) error {
	e.warnSplitViews(ctx, homeFlag)
	r, err := e.homeResolver(ctx, homeFlag, sf)
	if err != nil {
		return err
	}
	res, err := r.Resolve(ctx, handle)
	switch {
	case handles.ReasonOf(err) == handles.ReasonNoDomain:
		return worded(err, "%q has no domain and no home domain is known: write name@domain, or set KEZ_SERVER to your chat-server", handle)
	case err != nil:
		return aboutHandle(handle, err)
	}

	st := res.State
	out := whoisJSON{
		Handle:               res.Handle.String(),
		Key:                  res.Key.String(),
		PeerID:               res.Key.PeerID().String(),
		Fingerprint:          res.Key.Fingerprint(),
		EncryptionKey:        base64.RawURLEncoding.EncodeToString(res.EncryptionKey.Bytes()),
		EncryptionGeneration: res.Generation,
		SigchainURL:          res.SigchainURL,
		Seqno:                st.Seqno(),
		Head:                 st.Head().String(),
		Claims:               []whoisClaim{},
		Devices:              []whoisDevice{},
	}
	if len(st.Claims()) > 0 {
		cctx, cancel := context.WithTimeout(ctx, claimCheckTimeout)
		out.Claims = claimsJSON(r.CheckClaims(cctx, st))
		cancel()
	}
	for _, d := range st.Devices() {
		out.Devices = append(out.Devices, whoisDevice{Name: d.Name, Key: d.Key.String(), Fingerprint: d.Key.Fingerprint(), Primary: d.Primary, AddedSeqno: d.AddedSeqno, Revoked: d.Revoked})
	}
	if n := st.SharedFilesSeqno(); n > 0 {
		out.SharedFiles = sharedFiles(n, st.SharedFiles())
	}
	if asJSON {
		return json.NewEncoder(e.stdout).Encode(out)
	}
	printWhois(e.stdout, out)
	return nil
}

func printWhois(w io.Writer, o whoisJSON) {
	fmt.Fprintf(w, "handle:       @%s\n", o.Handle)
	fmt.Fprintf(w, "key:          %s\npeer id:      %s\nfingerprint:  %s\n", o.Key, o.PeerID, o.Fingerprint)
	fmt.Fprintf(w, "encryption:   X25519 %s (generation %d)\n", o.EncryptionKey, o.EncryptionGeneration)
	fmt.Fprintf(w, "sigchain:     %d link(s), head %s\n              %s\n", o.Seqno, o.Head, o.SigchainURL)
	if len(o.Claims) == 0 {
		fmt.Fprintln(w, "claims:       none")
	}
	for i, c := range o.Claims {
		label := ""
		if i == 0 {
			label = "claims:"
		}
		fmt.Fprintf(w, "%-14s%s\n", label, claimLine(c))
	}
	for i, d := range o.Devices {
		label := ""
		if i == 0 {
			label = "devices:"
		}
		state := fmt.Sprintf("added by link #%d", d.AddedSeqno)
		switch {
		case d.Primary:
			state = "the key itself"
		case d.Revoked:
			state += ", revoked"
		}
		fmt.Fprintf(w, "%-14s%q %s (%s)\n", label, d.Name, d.Fingerprint, state)
	}
	switch sf := o.SharedFiles; {
	case sf == nil:
		fmt.Fprintln(w, "shared files: none")
	case sf.Error != "":
		fmt.Fprintf(w, "shared files: a manifest this kez cannot read (link #%d): %s\n", sf.Seqno, sf.Error)
	default:
		names := make([]string, 0, 10)
		for i, f := range sf.Public {
			if i == 10 {
				names = append(names, "…")
				break
			}
			names = append(names, fmt.Sprintf("%q", f.Name))
		}
		fmt.Fprintf(w, "shared files: %d public", len(sf.Public))
		if len(names) > 0 {
			fmt.Fprintf(w, " (%s)", strings.Join(names, ", "))
		}
		fmt.Fprintf(w, ", %d private (link #%d); \"kez files @%s\" lists them\n", sf.Private, sf.Seqno, o.Handle)
	}
	fmt.Fprintln(w, "verified:     the sigchain was checked on this machine and claims this handle;\n              compare the fingerprint with its owner before you trust it")
	if len(o.Claims) > 0 {
		fmt.Fprintln(w, "              (a verified claim's proof was checked just now, signed by this key for this claim)")
	}
}
