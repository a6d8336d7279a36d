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
// dropping old ones if the operator sets one (discard new), and denies
// deletes and purges: chains are append-only down to the storage.
//
// # Appends
//
// Append reads the head, checks that the link follows it, and publishes
// with the header Nats-Expected-Last-Subject-Sequence set to the head's
// stream sequence for the filter kez.v1.chain.<key>.> (0 for a new
// chain). JetStream stores the message only if no other message reached
// that chain meanwhile, so of several appends at one seqno exactly one
// wins, across any number of sig-server replicas; the others get a
// *[sigchain.ConflictError] with the new head.
//
// Reads go to the stream leader (a JetStream message get), not to any
// replica (direct get), so a link is readable from every replica once its
// append returned. Links asks for up to 16 links at a time.
//
// While a JetStream node is down, the others keep serving; if the
// stream's leader was on it, reads and appends fail for the few seconds
// the remaining nodes need to elect a new leader (Raft election timeout,
// 4–9 s in nats-server), then work again.
package jsstore
