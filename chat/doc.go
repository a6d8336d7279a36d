// Package chat is KEZ chat's end-to-end encrypted messaging: the sealed
// envelope that travels through the broker, and the client that sends and
// receives envelopes over NATS.
//
// To send, call [Seal] with your identity (any [kez.Signer]), the
// recipient's primary key and X25519 encryption key as read from their
// verified sigchain, and a [Message]; publish the bytes it returns. To
// receive, make one [Opener] for your identity with [NewOpener] and call
// [Opener.Open] on each envelope, passing the sender key the NATS subject
// names; [OpenEnvelope] does the same for a single envelope. What they
// return has been decrypted and its signature verified; every failure
// wraps a sentinel error such as [ErrDecrypt] or [ErrBadSignature].
//
// An envelope is HPKE (RFC 9180; DHKEM(X25519), HKDF-SHA256,
// ChaCha20-Poly1305) around a message the sender signed together with the
// envelope's header, so the broker sees only the two keys it routes by and
// ciphertext, and a signed message cannot be re-wrapped to someone else.
// The format and its test vectors are in docs/spec/envelope.md.
//
// The envelope layer does not remember anything: dropping a replayed
// message ID, pinning contacts' keys and keeping history are the client's
// work.
package chat
