// Package kez is a KEZ chat identity: one ed25519 key made from 24 words.
//
// Most programs need two calls. [NewIdentity] makes a fresh identity and
// returns the 24-word paper backup that is its only recovery; [FromMnemonic]
// turns the same words back into the same identity on any machine. An
// [Identity] signs with a mandatory context string ([Identity.Sign]), so a
// signature made for one purpose can never be replayed for another, and its
// [PublicKey] is at once the KEZ identity, the NATS user nkey ("U…") and the
// libp2p PeerID.
//
// Each identity also has X25519 encryption keys, derived from the same seed
// with a separate domain ([Identity.EncryptionKey]); generation 0 is
// published in the eldest sigchain link and later generations let a user
// rotate it without changing who they are.
//
// [SaveIdentity] and [LoadIdentity] keep the identity in one file in a state
// folder (mode 0600), encrypted at rest with a passphrase (age, scrypt) when
// one is given. [Identity.SignNATSNonce] is the one signature without a
// context, for the NATS login, and it signs only nonce-shaped input. Tests
// that need a reproducible identity use [MnemonicFromEntropy] or
// [FromWords] with fixed words. Identities, keys and mnemonics are
// immutable and safe for concurrent use. An Identity and a Mnemonic print
// (fmt, log/slog) without their secrets; [Mnemonic.Phrase] spells the
// words out.
//
// The package does not talk to any server, hold a keyring of other people's
// keys, or choose where state lives: callers pass the folder.
// The derivations and encodings are specified in docs/spec/identity.md.
package kez
