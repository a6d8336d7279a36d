package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/kez-lat/kez-chat/claims"
	"github.com/kez-lat/kez-chat/sigchain"
)

func init() {
	register(&command{
		name:    "claim",
		args:    "(dns DOMAIN | https URL | nostr NPUB [--nsec-file F | --event F] | revoke SERVICE IDENTITY | list [--json]) [--home DIR] [--server URL] [--sig-server URL] [--verbose]",
		summary: "prove that a domain, a website or a nostr key is yours",
		help: `
A claim says in your sigchain that a name on another service is yours, and
carries a proof anyone can check: a statement signed by your key that names
the claim and the place in your sigchain it goes to (so it cannot be copied
to another chain, nor reused for a later claim). "kez whois" checks each
claim live and shows it verified, failed (with the reason) or not checked
yet. Adding and revoking claims needs your primary key: run them on the
install made by "kez init" or "kez recover".

kez claim dns DOMAIN
    Prints the statement to publish as a TXT record at _kez.DOMAIN and
    exits 1; once the record is there, the same command checks it and adds
    the claim to your sigchain.

kez claim https URL
    The same with a website: the statement must be a line of the file
    https://HOST/.well-known/kez-claim (URL names the host; no redirects
    are followed).

kez claim nostr NPUB [--nsec-file F | --event F]
    Claims a nostr key: the proof is a nostr event (kind 1, the statement
    as its content, a tag ["kez", YOUR KEY]) signed by that key. With
    --nsec-file, kez signs it with the nsec in the file (its first line);
    with --event, it takes the signed event's JSON from the file; with
    neither, it prints the statement to post and exits 1. No relay is
    contacted.

kez claim revoke SERVICE IDENTITY
    Revokes your claim (kez claim revoke dns example.com); you may remove
    its proof afterwards.

kez claim list [--json]
    Your claims and their check. --json prints [{"id","service",
    "identity","proof","status","reason","checked_at"}] (status: verified,
    failed or unchecked; reason: why it failed; checked_at: null when not
    checked).

The statement binds the next place in your sigchain: if your sigchain
changes before the claim is added (another link from another install),
the command says so and prints the new statement to publish.

KEZ_DNS_SERVER (host:port) names the DNS server asked for TXT records
(default: the first nameserver of /etc/resolv.conf).`,
		flags: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			var o claimOptions
			o.cf.declare(fs, false)
			fs.BoolVar(&o.asJSON, "json", false, "print JSON (list)")
			fs.StringVar(&o.nsecFile, "nsec-file", "", "nostr: a file whose first line is the nsec of NPUB, to sign the proof event with")
			fs.StringVar(&o.eventFile, "event", "", "nostr: a file holding the proof event's JSON, signed by NPUB")
			return func(ctx context.Context, args []string) error {
				if len(args) == 0 {
					return usagef("claim takes dns, https, nostr, revoke or list")
				}
				sub, rest := args[0], args[1:]
				if sub != "list" && o.asJSON {
					return usagef("--json is for claim list only")
				}
				if sub != "nostr" && (o.nsecFile != "" || o.eventFile != "") {
					return usagef("--nsec-file and --event are for claim nostr")
				}
				switch sub {
				case "dns", "https", "nostr":
					if len(rest) != 1 {
						return usagef("claim %s takes one %s", sub, map[string]string{"dns": "DOMAIN", "https": "URL", "nostr": "NPUB"}[sub])
					}
					if o.nsecFile != "" && o.eventFile != "" {
						return usagef("give --nsec-file or --event, not both")
					}
					return runClaimAdd(ctx, e, o, sub, rest[0])
				case "revoke":
					if len(rest) != 2 {
						return usagef("claim revoke takes the SERVICE and the IDENTITY of one of your claims (kez claim list lists them)")
					}
					return runClaimRevoke(ctx, e, o, rest[0], rest[1])
				case "list":
					if len(rest) != 0 {
						return usagef("claim list takes no arguments")
					}
					return runClaimList(ctx, e, o)
				}
				return usagef("no claim subcommand %q: use dns, https, nostr, revoke or list", sub)
			}
		},
	})
}

type claimOptions struct {
	cf                  chatFlags
	asJSON              bool
	nsecFile, eventFile string
}

// claimCheckTimeout bounds the live checks of one command.
const claimCheckTimeout = 30 * time.Second

// claimChecker returns the checker of claims: the DNS server of
// KEZ_DNS_SERVER (default: the system's), the local domains of
// KEZ_LOCAL_DOMAINS.
func (e *env) claimChecker() *claims.Checker {
	return &claims.Checker{
		DNSServer:    e.getenv("KEZ_DNS_SERVER"),
		LocalDomains: e.localDomains(),
	}
}

// claimIdentity turns the argument of "kez claim SERVICE ARG" into the
// claim's identity: a lower-case DNS name, the host of an https URL (with
// its port, if any), an npub; claims.CheckIdentity has the last word.
func claimIdentity(service, arg string) (string, error) {
	identity := strings.ToLower(arg)
	switch service {
	case claims.ServiceDNS:
		identity = strings.TrimSuffix(identity, ".")
	case claims.ServiceHTTPS:
		s := arg
		if !strings.Contains(s, "://") {
			s = "https://" + s
		}
		u, err := url.Parse(s)
		switch {
		case err != nil || u.Host == "":
			return "", usagef("%q is not a URL (write it as https://example.com)", arg)
		case u.Scheme != "https":
			return "", usagef("%q is not an https URL: a claim of a website is proven over https only", arg)
		case u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/" && u.Path != claims.WellKnownPath):
			return "", usagef("%q names more than a website: give only https://HOST (the proof is always at https://HOST%s)", arg, claims.WellKnownPath)
		}
		identity = strings.ToLower(u.Host)
	}
	switch err := claims.CheckIdentity(service, identity); {
	case errors.Is(err, claims.ErrUnsupported):
		return "", usagef("kez cannot claim %q: use dns, https or nostr", service)
	case err != nil:
		return "", usagef("%q is not %s", arg, map[string]string{
			claims.ServiceDNS:   "a domain name (write it as example.com)",
			claims.ServiceHTTPS: "a website (write it as https://example.com)",
			claims.ServiceNostr: "a nostr public key (npub1…)",
		}[service])
	}
	return identity, nil
}

// claimWhere says where the proof of a claim lives.
func claimWhere(service, identity string) string {
	switch service {
	case "dns":
		return "the TXT record at _kez." + identity
	case "https":
		return "https://" + identity + claims.WellKnownPath
	case "nostr":
		return "a nostr event signed by " + identity
	}
	return "its proof"
}

func runClaimAdd(ctx context.Context, e *env, o claimOptions, service, arg string) error {
	identity, err := claimIdentity(service, arg)
	if err != nil {
		return err
	}
	acct, srv, st, err := e.ownChain(ctx, o.cf)
	if err != nil {
		return err
	}
	id, err := acct.primary("kez claim " + service)
	if err != nil {
		return err
	}
	for _, c := range st.Claims() {
		if c.Service == service && c.Identity == identity {
			return fmt.Errorf("you claim %s %s already (link #%d of your sigchain); nothing was changed: \"kez claim revoke %s %s\" revokes it", service, identity, c.Seqno, service, identity)
		}
	}
	stmt := claims.NewStatement(id, service, identity, st.Seqno()+1, st.Head().String())
	proof := stmt.Text()
	again := fmt.Sprintf("kez claim %s %s", service, identity)
	if service == "nostr" {
		switch {
		case o.nsecFile != "":
			if proof, err = nostrProof(o.nsecFile, stmt); err != nil {
				return err
			}
		case o.eventFile != "":
			b, err := readSmallFile(o.eventFile, 2*sigchain.MaxProofLen)
			if err != nil {
				return fmt.Errorf("reading the event file: %w", err)
			}
			// As a nostr client wrote it: the proof is its canonical form.
			c, err := sigchain.Canonicalize(bytes.TrimSpace(b))
			if err != nil {
				return worded(err, "%s does not hold a nostr event's JSON (one object, as your nostr client shows it); nothing was changed", o.eventFile)
			}
			proof = string(c)
		default:
			fmt.Fprintf(e.stdout, "Post this as a kind-1 nostr note from %s, with the tag [\"kez\", %q], and save the signed event's JSON in a file:\n\n%s\n\n"+
				"then run \"%s --event FILE\" (or let kez sign it: \"%s --nsec-file FILE\").\n", identity, acct.person.String(), stmt.Text(), again, again)
			return &exitError{code: 1, err: worded(nil, "the claim needs its signed nostr event (--event FILE) or the nsec to sign it (--nsec-file FILE); nothing was changed")}
		}
	}
	link, err := sigchain.NewLink(id, st, sigchain.TypeAddClaim, sigchain.AddClaimBody(service, identity, proof), e.clock())
	if err != nil {
		return worded(err, "the claim cannot be made: %s; nothing was changed", e.sentence(err))
	}
	next, err := st.Extend([]*sigchain.Link{link})
	if err != nil {
		return worded(err, "the claim cannot be made: %s; nothing was changed", e.sentence(err))
	}
	res := e.checkOwnClaim(ctx, next, link)
	switch {
	case res.Status == claims.Verified:
	case service != claims.ServiceNostr && (res.Status == claims.Unchecked || errors.Is(res.Err, claims.ErrNotFound) || errors.Is(res.Err, claims.ErrUnavailable)):
		// Not there (yet), or the place cannot be read: what to publish.
		what := "Publish this TXT record at _kez." + identity
		if service == claims.ServiceHTTPS {
			what = "Serve this line in the file https://" + identity + claims.WellKnownPath
		}
		fmt.Fprintf(e.stdout, "%s, then run \"%s\" again:\n\n%s\n\n", what, again, stmt.Text())
		why := claimWhere(service, identity) + " does not hold the statement of this claim yet"
		switch {
		case res.Status == claims.Unchecked:
			why = claimWhere(service, identity) + " could not be checked in time"
		case !errors.Is(res.Err, claims.ErrNotFound):
			why = claimReason(res.Claim, res.Err)
		}
		return &exitError{code: 1, err: worded(res.Err, "%s; nothing was changed", why)}
	case res.Status == claims.Failed:
		return worded(res.Err, "the proof of the claim does not hold: %s; nothing was changed", claimReason(res.Claim, res.Err))
	default:
		return fmt.Errorf("%s could not be checked in time; nothing was changed: try again", claimWhere(service, identity))
	}
	sc := &sigchain.Client{BaseURL: srv.sigServer, HTTPClient: httpClient}
	if err := sc.Append(ctx, link); err != nil {
		if errors.Is(err, sigchain.ErrConflict) {
			return worded(err, "your sigchain changed while the claim was being added (another install?), so its statement names a place that is taken; nothing was changed: run \"%s\" again and publish the new statement it prints", again)
		}
		return worded(err, "your sig-server did not take the claim (%s); nothing was changed", e.sentence(err))
	}
	fmt.Fprintf(e.stdout, "Claimed %s %s: link #%d of your sigchain says so, and %s proves it; \"kez whois %s\" shows it verified.\n",
		service, identity, link.Seqno(), claimWhere(service, identity), acct.who())
	if service == "nostr" {
		fmt.Fprintln(e.stdout, "The signed event is in your sigchain; posting it to your relays too is up to you.")
	}
	return nil
}

// checkOwnClaim checks the claim of link, the head of st, live: that
// claim only, not every claim of the chain again.
func (e *env) checkOwnClaim(ctx context.Context, st *sigchain.State, link *sigchain.Link) claims.Result {
	ctx, cancel := context.WithTimeout(ctx, claimCheckTimeout)
	defer cancel()
	for _, cl := range st.Claims() {
		if cl.ID != link.ID() {
			continue
		}
		err := e.claimChecker().CheckClaim(ctx, st.Key(), cl)
		switch {
		case err == nil:
			return claims.Result{Claim: cl, Status: claims.Verified}
		case ctx.Err() != nil:
			return claims.Result{Claim: cl} // unfinished: Unchecked
		}
		return claims.Result{Claim: cl, Status: claims.Failed, Err: err}
	}
	return claims.Result{Status: claims.Unchecked}
}

// nostrProof signs the proof event of the nostr claim of stmt with the
// nsec on the first line of the file nsecFile.
func nostrProof(nsecFile string, stmt claims.Statement) (string, error) {
	line, err := readPassphraseFile(nsecFile)
	if err != nil {
		return "", fmt.Errorf("reading the nsec file: %w", err)
	}
	ev, err := claims.NostrEvent(strings.TrimSpace(string(line)), stmt)
	switch {
	case errors.Is(err, claims.ErrWrongKey):
		return "", worded(err, "the nsec in %s is the key of another npub, not of %s; nothing was changed", nsecFile, stmt.Identity)
	case errors.Is(err, claims.ErrBadIdentity):
		return "", worded(err, "the first line of %s is not a nostr secret key (nsec1…); nothing was changed", nsecFile)
	case err != nil:
		return "", worded(err, "the nostr event could not be signed (%v); nothing was changed", err)
	}
	return ev, nil
}

func runClaimRevoke(ctx context.Context, e *env, o claimOptions, service, arg string) error {
	identity, err := claimIdentity(service, arg)
	if err != nil {
		identity = arg // a claim this kez would not make (github, say) may still be in the chain
	}
	acct, srv, st, err := e.ownChain(ctx, o.cf)
	if err != nil {
		return err
	}
	id, err := acct.primary("kez claim revoke")
	if err != nil {
		return err
	}
	var found *sigchain.Claim
	for _, c := range st.Claims() {
		if c.Service == service && (c.Identity == identity || c.Identity == arg) {
			found = &c
		}
	}
	if found == nil {
		return fmt.Errorf("you have no %s claim of %s (\"kez claim list\" lists yours); nothing was changed", service, arg)
	}
	link, err := sigchain.NewLink(id, st, sigchain.TypeRevokeClaim, sigchain.RevokeClaimBody(found.ID), e.clock())
	if err != nil {
		return worded(err, "the claim cannot be revoked: %s; nothing was changed", e.sentence(err))
	}
	if err := (&sigchain.Client{BaseURL: srv.sigServer, HTTPClient: httpClient}).Append(ctx, link); err != nil {
		if errors.Is(err, sigchain.ErrConflict) {
			return worded(err, "your sigchain changed at the same time (another install?); nothing was changed: run \"kez claim revoke %s %s\" again", service, arg)
		}
		return worded(err, "your sig-server did not take the revocation (%s); nothing was changed", e.sentence(err))
	}
	fmt.Fprintf(e.stdout, "Revoked your claim %s %s (link #%d of your sigchain); you may remove %s now.\n", service, found.Identity, link.Seqno(), claimWhere(service, found.Identity))
	return nil
}

func runClaimList(ctx context.Context, e *env, o claimOptions) error {
	_, _, st, err := e.ownChain(ctx, o.cf)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, claimCheckTimeout)
	defer cancel()
	out := claimsJSON(e.claimChecker().Check(ctx, st))
	if o.asJSON {
		return json.NewEncoder(e.stdout).Encode(out)
	}
	if len(out) == 0 {
		fmt.Fprintln(e.stdout, "You have no claims: \"kez claim dns DOMAIN\", \"kez claim https URL\" and \"kez claim nostr NPUB\" add one.")
		return nil
	}
	for _, c := range out {
		fmt.Fprintln(e.stdout, claimLine(c))
	}
	return nil
}

// claimLine words a claim and its check on one line, as "kez claim list"
// and "kez whois" show it: "SERVICE IDENTITY  STATUS".
// The identity is shown as it is only if it is valid for its service (or
// short and visible ASCII); else quoted and cut (displayText), so that a
// chain cannot move the terminal nor push the status out of sight.
func claimLine(c whoisClaim) string {
	id := c.Identity
	if claims.CheckIdentity(c.Service, id) != nil {
		id = displayText(id)
	}
	return c.Service + " " + id + "  " + c.statusWords()
}

// maxDisplayText bounds the text of a chain (an identity, a proof) shown
// as it is; longer text is quoted and cut.
const maxDisplayText = 64

// displayText returns s as it is if it is 1 to maxDisplayText bytes of
// visible ASCII (no space), else displayQuoted(s).
func displayText(s string) string {
	if s == "" || len(s) > maxDisplayText {
		return displayQuoted(s)
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return displayQuoted(s)
		}
	}
	return s
}

// displayQuoted quotes the first maxDisplayText characters of s in
// printable ASCII (Go escapes for the others: controls, bidi overrides,
// line separators, look-alikes), "..." after the quote if s was cut.
func displayQuoted(s string) string {
	r := []rune(s)
	if len(r) > maxDisplayText {
		return strconv.QuoteToASCII(string(r[:maxDisplayText])) + "..."
	}
	return strconv.QuoteToASCII(s)
}

// claimsJSON turns the results of the checks of a chain's claims into
// their JSON form, in the chain's order.
func claimsJSON(rs []claims.Result) []whoisClaim {
	out := make([]whoisClaim, 0, len(rs))
	for _, r := range rs {
		c := whoisClaim{ID: r.Claim.ID.String(), Service: r.Claim.Service, Identity: r.Claim.Identity, Proof: r.Claim.Proof, Status: "unchecked"}
		switch {
		case errors.Is(r.Err, claims.ErrUnsupported): // unchecked, with why
			c.Reason = claimReason(r.Claim, r.Err)
		case r.Status == claims.Verified:
			c.Status = "verified"
		case r.Status == claims.Failed:
			c.Status, c.Reason = "failed", claimReason(r.Claim, r.Err)
		}
		if r.Status != claims.Unchecked && !r.CheckedAt.IsZero() {
			at := r.CheckedAt.UTC()
			c.CheckedAt = &at
		}
		out = append(out, c)
	}
	return out
}

// statusWords words the check of a claim: "verified", "failed: REASON",
// "not checked: REASON" (a service kez does not check), "not checked yet".
func (c whoisClaim) statusWords() string {
	switch {
	case c.Status == "verified":
		return "verified"
	case c.Status == "failed":
		return "failed: " + c.Reason
	case c.Reason != "":
		return "not checked: " + c.Reason
	}
	return "not checked yet"
}

// claimReason words why the proof of claim c does not hold, as the part
// of a sentence after "failed: ".
func claimReason(c sigchain.Claim, err error) string {
	switch {
	case errors.Is(err, claims.ErrUnsupported):
		return fmt.Sprintf("kez does not check %s claims (its proof: %s)", c.Service, displayText(c.Proof))
	case errors.Is(err, claims.ErrNotFound):
		return claimWhere(c.Service, c.Identity) + " does not hold its statement"
	case errors.Is(err, claims.ErrWrongKey):
		return "its statement names another KEZ key, so it proves nothing for this one"
	case errors.Is(err, claims.ErrStale):
		return "its statement was made for another place in the sigchain (an older or revoked claim's), not for this claim"
	case errors.Is(err, claims.ErrBadSignature) && c.Service == "nostr":
		return "its nostr event or statement is not signed by the key it names"
	case errors.Is(err, claims.ErrBadSignature):
		return "the signature of its statement does not verify"
	case errors.Is(err, claims.ErrBadStatement):
		return "its proof is not a kez claim statement"
	case errors.Is(err, claims.ErrBadIdentity):
		return fmt.Sprintf("%s is not a valid %s name", displayQuoted(c.Identity), c.Service)
	case errors.Is(err, claims.ErrForbidden):
		return fmt.Sprintf("kez does not contact %s, which is not a public address (KEZ_LOCAL_DOMAINS lists the hosts of this machine or network it may contact)", c.Identity)
	case errors.Is(err, context.DeadlineExceeded):
		return claimWhere(c.Service, c.Identity) + " did not answer in time"
	}
	// claims.ErrUnavailable and what else a network gives.
	why := cause(err)
	if why == "" {
		why = " (an error answer, a redirect or a file too large)"
	}
	return fmt.Sprintf("%s could not be read%s; it may work later", claimWhere(c.Service, c.Identity), why)
}
