// Package files is KEZ chat's peer-to-peer file sharing: content-addressed
// blobs, the libp2p blob exchange, shared-file manifests and private shares.
//
// To share: [HashFile] gives a file's [Tree] and CID; a [FileSource] (or a
// share index implementing [BlobSource]) holds what to serve; [NewNode]
// starts a libp2p host whose PeerID is the user's key and serves those
// blobs, asking a [Policy] who may fetch what. To fetch: [Node.Fetch]
// downloads a blob from its owner, checking every 256 KiB chunk against the
// CID before writing it, resuming an interrupted download, and moving the
// file into place only when complete.
//
// A blob's CID commits to its size and to a SHA-256 hash tree over its
// chunks ([VerifyChunk], [VerifyRange]), so any chunk can be checked
// against the CID alone. docs/spec/blobs.md specifies the tree, the CID and
// the wire protocol [ProtocolID], with test vectors.
//
// A [Manifest] is the body of a set_shared_files sigchain link: the public
// entries, and private ones whose file is encrypted with a fresh [FileKey]
// ([EncryptFile]) and whose key, name and media type are wrapped to each
// recipient with HPKE. [Visible] shows a viewer the entries they may see.
// docs/spec/manifest.md specifies it.
//
// The package does not find peers (that is NATS signalling), keep a share
// index on disk, or talk to any server: callers compose those.
package files
