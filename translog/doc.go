// Package translog is the client side of the sig-server's transparency log
// (docs/spec/translog.md): every sigchain link a sig-server accepts is an
// [Entry] of an append-only Merkle log (RFC 6962 hashing, C2SP tlog-tiles
// layout), whose signed [Checkpoint]s commit to its whole history.
//
// A chain GET carries a [HeadProof]: a checkpoint and the inclusion proof of
// the entry of the chain's head. A [Monitor] checks it ([Monitor.CheckHead]),
// pins each sig-server's log key on first use, and checks that every
// checkpoint it sees of a log (its own, or one a peer carried:
// [Monitor.Witness]) is consistent with the newest one it accepted. Two
// checkpoints of one log that cannot both be true are a [SplitViewError].
//
// The package imports kez only; it never imports sigchain, so the sigchain
// client and server can both use it.
package translog
