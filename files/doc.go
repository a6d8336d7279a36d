// Package files is KEZ chat's peer-to-peer file sharing: content-addressed
// blobs, the libp2p blob exchange, shared-file manifests, private shares,
// the NATS signalling that finds a peer, and the share index.
//
// Most programs need one type. [Open] returns a [Sharing] for a user (their
// identity and state folder, the sig-server, handle resolution and NATS),
// and then:
//
//   - [Sharing.Share] hashes a file, records it in the share index
//     (KEZ_HOME/shares.db) and publishes the new manifest in the user's
//     sigchain; with [To] the file is private, encrypted for the named
//     handles only (at the keys they name now; [ToKey] for a key the
//     caller pinned, such as a chat contact's);
//   - [Sharing.Browse] lists what another user shares that this user may
//     see, from their verified sigchain (it works while they are offline);
//   - [Sharing.Fetch] finds the owner's node over NATS, downloads the file
//     peer to peer, verified and resumable, decrypts a private one, and
//     moves it into place only when complete;
//   - [Sharing.Serve] stays online: it answers fetchers and serves the
//     shared files until its context ends or the sharing is closed
//     ([ErrClosed]); [Sharing.Shutdown] lets the transfers under way
//     finish first, [Sharing.Close] stops at once;
//   - [Sharing.Unshare] and [Sharing.Shared] manage what is shared.
//
// The parts are usable alone. [NewNode] starts a libp2p host whose PeerID
// is the device's key and serves a [BlobSource] under a [Policy];
// [Node.Fetch] downloads a blob checking every chunk against its CID before
// writing it (docs/spec/blobs.md). [Sharing.Locate] is the signalling: a
// fetcher asks on kez.v1.p2p.<device key> and that device's
// [Sharing.Serve] answers with its addresses, signed
// (docs/spec/signalling.md).
//
// A person may use several devices (docs/spec/manifest.md §6). Only an
// install holding the primary key publishes (Share, Unshare; a linked
// device gets [ErrNotPrimary]); each entry names the device that serves
// it, and Fetch refuses a device that is not a current device of the
// owner's chain ([DeviceError]). Each install serves its own share index,
// with its own device key.
//
// The formats are in package [github.com/kez-lat/kez-chat/files/format]:
// CIDs and hash trees, encrypted private files and their keys, and the
// manifest (the body of a set_shared_files sigchain link) with
// [format.Visible], which shows a viewer what they may see
// (docs/spec/manifest.md).
//
// The package does not keep contacts or messages (package chat), run any
// server, or store file bytes anywhere but the sharer's own files and the
// fetcher's destination: there is no relay or pinning service, so both
// peers must be online for a transfer.
package files
