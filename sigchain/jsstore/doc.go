// Package jsstore keeps sigchains ([sigchain.Store]) in the operator's
// NATS JetStream, so that several sig-server replicas share them. It is
// the scale-out twin of sigchain/sqlitestore: same contract, same tests
// (package sigchain/storetest).
//
//	nc, _ := nats.Connect(natsURL, ...)      // the sig-server's own credentials
//	js, _ := jetstream.New(nc)
//	chains, err := jsstore.New(ctx, js, jsstore.WithReplicas(3))
//	http.Handle("/", sigchain.NewHandler(chains))
//
// New creates the stream if it is missing (idempotently: every replica may
// call it at start) and otherwise uses the existing stream as it is, after
// checking that it takes the chain subjects. The Store does not own the
// connection; close it yourself.
//
// # Layout
//
// One stream (default [DefaultStream], "KEZ_SIGCHAINS") holds every link,
// the link's exact canonical bytes as the message body, on the subject
//
//	kez.v1.chain.<key>.<seqno>      e.g. kez.v1.chain.UAB…XYZ.1
//
// (prefix [DefaultSubjectPrefix]; the key in its "U…" nkey form, the
// seqno in decimal). A chain's head is the last message on
// kez.v1.chain.<key>.>, its ID the CID of the message body. The stream is
// file-backed, has no age or size limit, refuses new messages rather than
// dropping old ones if the operator sets one (discard new), denies deletes
// of single messages, and allows direct gets (for Links, below) and purges
// (for the collection of orphan chains, below; a stream made by an earlier
// version denies purges, and then nothing is collected).
//
// # Orphan chains
//
// With every eldest link, in one atomic batch, Append publishes an empty
// marker on kez.v1.chain.<key> (outside the chain's filter): the chain is
// an orphan candidate from then on. The marker is published on condition
// that the key has no entry in the device index (below), so a device key
// never starts a chain of its own. [Store.CollectOrphans] lists the
// markers, and for each one stored before the cutoff reads the chain
// again; if no link names a handle, it publishes a fence,
// kez.v1.chain.<key>.gc, on condition that the chain's head is still the
// one it read (the same expected-last-sequence check appends use), then
// purges the chain and its marker up to the fence. An append racing it
// either lands first (the fence fails, the chain is kept) or follows the
// fence (it sees no chain). Readers treat a fenced chain as absent; a fence
// left by a collection that stopped midway is purged by the next one.
// Markers of chains that did name a handle are dropped as they are found.
//
// # Appends
//
// Append reads the head, checks that the link follows it, and publishes
// with the header Nats-Expected-Last-Subject-Sequence set to the head's
// stream sequence for the filter kez.v1.chain.<key>.> (0 for a new
// chain). JetStream stores the message only if no other message reached
// that chain meanwhile, so of several appends at one seqno exactly one
// wins, across any number of sig-server replicas; the others get a
// *[sigchain.ConflictError] with the new head. An eldest link and a link
// that adds or revokes a device go in an atomic batch with the same
// check (below).
//
// The head is read from the stream leader (a JetStream message get), not
// from any replica, so a link is readable from every sig-server replica
// once its append returned. Links then fetches the links up to that head
// in one direct batch get (multi_last over their subjects) that any
// JetStream replica may answer: a link's subject is written once, so a
// lagging replica can lack a link but never return a wrong one, and what
// it lacks is read from the leader. A stream without direct gets (an
// operator's own) is read from the leader alone.
//
// # Prekeys
//
// The store is also a [sigchain.PrekeyStore]: a KV bucket (default
// [DefaultPrekeyBucket], "KEZ_PREKEYS", one revision per key, values at
// most [sigchain.MaxPrekeySize] bytes, the same replicas as the stream)
// maps each key ("U…") to its signed prekey record. PutPrekey reads the
// stored record from the bucket's stream leader and writes on condition
// that the key's revision has not moved (a KV update), so of concurrent
// publishers the newest record wins and none goes back. Collecting an
// orphan chain purges its key's record.
//
// # Devices
//
// The store is also a [sigchain.DeviceStore]: the entry of a device key
// is the last message on kez.v1.chain.devices.<device>, a JSON object
// {"person":"U…","revoked":false}. Append stores an add_device or
// revoke_device link and the device's new entry in one JetStream atomic
// batch (the stream allows them; a stream made by an earlier version is
// updated to): the link with the chain's expected-last-sequence check,
// the entry on condition that the device's subject is still where it was
// read (empty, for an add), and for an add the entry once more on
// condition that the device has no chain (a batch message checks one
// subject; readers take the last entry). So they land together or not
// at all, of two chains adding one device at once exactly one succeeds,
// and of a key's eldest link and an add naming it exactly one does. A
// revocation then purges the device's prekey. Collecting an orphan chain
// purges its devices' entries and prekeys, after its fence and before its
// links, so a collection that stops midway finds them again.
//
// And a [sigchain.LinkRequestStore]: a KV bucket (default
// [DefaultLinkRequestBucket], "KEZ_LINK_REQUESTS") maps a link code's
// text to its pending request; the bucket's age limit (15 minutes, the
// longest a request lives plus its clock skew) drops requests by itself.
//
// # Groups
//
// [Store.Groups] is the [group.Store] of the sig-server's groups, in the
// same stream: a group's membership chain is the messages on
//
//	kez.v1.chain.groups.<name>.<seqno>
//
// the name ("team@kez.lat") in lower-case hex, since a subject token
// has no dots. Appends and reads work as for chains: the head is the
// last message on kez.v1.chain.groups.<name>.> read from the leader, an
// append is published on condition that no message reached that filter
// since (so of racing appends at one seqno exactly one wins), and the
// links come in one direct batch get. A create link goes in one atomic
// batch with an empty marker on kez.v1.chain.groupsby.<person>.<name>,
// and [Groups.CreatedBy] counts a person's markers.
//
// While a JetStream node is down, the others keep serving; if the
// stream's leader was on it, reads and appends fail for the few seconds
// the remaining nodes need to elect a new leader (Raft election timeout,
// 4–9 s in nats-server), then work again.
package jsstore
