// Package natstest runs a real nats-server (the version pinned in go.mod)
// for tests, either inside the test process or as a separate process.
//
// Most tests call [Run] with configuration text: it writes the text to a
// file, parses it exactly as nats-server would, moves the client port to a
// free loopback port and the JetStream store into t.TempDir(), starts the
// server and stops it in t.Cleanup. [RunOptions] does the same from a
// *server.Options. Both return a [Server] whose [Server.Restart] keeps the
// port and the store, so JetStream state survives it.
//
// When a test needs a server it can kill (SIGKILL) or that must not share
// the test's address space, [StartProcess] builds the nats-server binary
// once (cached under the user cache directory, keyed by server version and
// Go toolchain) and runs it with the configuration file; the returned
// [Process] waits on the /healthz monitor endpoint before handing it over.
//
// [FreePort] picks a free loopback TCP port. For JetStream stores:
// [JetStreamConf], [ConnectJetStream], [Cluster.StreamLeader] and
// [Eventually] (to wait out an election); [StartForExample] serves
// testable examples, which have no *testing.T.
//
// This package is for tests only; production code never embeds or
// supervises a NATS server.
package natstest
