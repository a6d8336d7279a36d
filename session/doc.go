// Package session is KEZ's format v2 messaging protocol
// (docs/spec/session.md): a post-quantum handshake to the recipient's
// signed prekey (hybrid HPKE, MLKEM768-X25519) followed by Signal's Double
// Ratchet, so that messages have forward secrecy and cost no public-key
// operation once a session is established.
//
// A [Prekey] is the signed record a key owner publishes on the sig-server;
// its private half, [PrekeyPrivate], stays on the device and is rotated
// and deleted by a [Ring].
//
// Group messages are format v3 (docs/spec/senderkeys.md): Signal's sender
// keys. A device sending to a group makes a [SenderKey] per membership
// epoch, gives its [SenderKeyDistribution] to each member device inside
// their pairwise sessions, and seals one envelope for them all; each
// reader opens it with a [ReceiverKey].
package session
