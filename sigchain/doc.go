// Package sigchain is a KEZ user's public, append-only record: a chain of
// links, each signed by the user's primary key, that says which X25519
// encryption key, handle, claims and shared files the key currently has.
//
// Readers call [Verify] on a whole chain (or [State.Extend] on top of a
// state they pinned earlier) and read the result from [State]. To detect a
// server that rewrites or truncates a chain, keep [State.Pin] and compare
// later fetches with [CheckAgainst]; [Client.FetchVerified] does all of
// this against a sig-server. Writers build links with [NewLink] and the
// typed body constructors ([EldestBody], [SetEncryptionKeyBody],
// [AddClaimBody], [RevokeClaimBody], [SetHandleBody], [AddDeviceBody],
// [RevokeDeviceBody]) and send them with
// [Client.Append]. [NewHandler] is the sig-server's HTTP API over a
// [Store]; sigchain/sqlitestore is its SQLite store.
//
// A person may use several devices, each with its own key. The chain's
// key is the first; a new device signs a [LinkRequest] (shown to the
// person as a short [LinkCode]) and the person certifies it with an
// add_device link ([AddDeviceBody]) or removes it for good with a
// revoke_device link ([RevokeDeviceBody]). [State.CurrentDevices] lists
// the devices that may send and receive for the person; servers that
// hold no chain check one device link with [VerifyDeviceLink].
//
// The sig-server is also the directory of signed prekeys, the records
// ([session.Prekey]) that start format v2 sessions: a key with a chain
// publishes its current one with [Client.PublishPrekey] and anyone fetches
// it, verified, with [Client.FetchPrekey]. A store that is a
// [PrekeyStore] (both of this module's are) keeps them.
//
// Every link has exactly one byte form (canonical JSON, fixed field order)
// and its ID is a CIDv1 (raw, sha2-256) of those bytes; [ParseLink] rejects
// every other form. In v1 every link is signed by the eldest key: the
// primary key cannot rotate, a new key is a new chain. The format is
// specified, with test vectors, in docs/spec/sigchain.md.
//
// The package does not resolve handles, check claims on other services, or
// interpret set_shared_files bodies (the files package defines them).
package sigchain
