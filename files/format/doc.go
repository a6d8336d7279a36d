// Package format is the byte formats of KEZ file sharing, with no network
// and no state: what a blob's CID commits to, how a private file is
// encrypted, and how the list of shared files is encoded. Package files
// builds the Sharing API on it; programs that only check or produce these
// bytes (a verifier, another implementation) can use it alone.
//
// Blobs (docs/spec/blobs.md): a CID commits to a blob's size and to a
// SHA-256 hash tree over its 256 KiB chunks. [HashFile], [BuildTree] and
// [NewTree] make a [Tree], which gives proofs; [VerifyChunk] and
// [VerifyRange] check chunks against a CID alone; [ParseCID] and
// [CheckCID] accept only KEZ blob CIDs.
//
// Private files (docs/spec/manifest.md, "Encrypted files"): [Encrypt],
// [Decrypt], [EncryptFile] and [DecryptFile] seal a file in independent
// ChaCha20-Poly1305 segments under a fresh [FileKey]; [EncryptReader] and
// [DecryptReader] do it at any offset.
//
// Manifests (docs/spec/manifest.md): a [Manifest] is the body of a
// set_shared_files sigchain link. [Manifest.AddPublic] and
// [Manifest.AddPrivate] add entries (a private one wrapped to each
// [Recipient] with HPKE), [Manifest.Encode] and [DecodeManifest] enforce
// the same bounds both ways, and [Visible] returns the entries a viewer
// may see.
//
// The test vectors of both specs are in testdata/ and are checked by this
// package's tests.
package format
