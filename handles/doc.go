// Package handles names people: "@alice@kez.lat" is the local name alice at
// the home server kez.lat. It holds the handle rules, the registry a
// chat-server keeps, the HTTP handlers that serve it (claim, lookup,
// WebFinger) and the [Resolver] clients use to turn a handle into a
// verified key.
//
// Most programs need one call on each side:
//
//   - a client resolves a handle with [Resolver.Resolve]: it asks the
//     handle's home server (its own server's lookup, or WebFinger at a
//     foreign domain), fetches and verifies the key's sigchain from the
//     sig-server the answer names, and accepts only if the registry and
//     the chain agree;
//   - a server mounts [Server] (a [Store], usually [OpenSQLite], plus a
//     sig-server client) to accept claims and answer lookups.
//
// [Register] gives a key a handle the whole way (the sigchain link that
// names it, then the claim); [Client.Claim] is the claim alone, for a key
// whose sigchain already names the handle. [Parse] and [Rules.Parse] check
// handle text and refuse look-alike tricks with a typed *[HandleError].
//
// The package does not make sigchains (see package sigchain), decide who
// may connect to NATS (package callout) or pin keys (package chat): a
// resolved key is only as trusted as the chain that backs it. Handles are
// lower-case ASCII; internationalised names and domains are refused in v0.
// The rules, the claim statement and the WebFinger document are specified
// in docs/spec/handles.md.
package handles
