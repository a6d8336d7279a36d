// Package claims makes and checks identity claims: a chain's add_claim
// link says its owner is also an identity on another service (a DNS name,
// an https site, a nostr key), and its proof holds a statement signed by
// the chain's key that binds the key, the claim and the link's position in
// the chain. The statement is published where only that identity's owner
// can publish it (a TXT record, a file on the site, an event signed by the
// nostr key), so a claim checks out only if both sides agree.
//
// [NewStatement] and [Statement.Text] make the statement to publish;
// [ParseStatement] and [Statement.Verify] read one; a [Checker] checks the
// claims of a verified chain, live, and caches the results. The format
// and the checks are specified in docs/spec/claims.md.
package claims
