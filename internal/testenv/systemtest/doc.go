// Package systemtest holds KEZ chat's cross-package system tests: faults,
// load, hostile input and scale-out, each against real processes (a
// nats-server process or a 3-node cluster, the chat-server and
// sig-server libraries on loopback HTTP, SQLite files, libp2p hosts).
//
// There is no non-test code here besides this comment. The tests build a
// deployment with the same parts an operator runs (the nats.conf snippet
// of "kez-chat-server nats-config", chatserver.Server, sigchain.NewHandler
// over sigchain/sqlitestore or sigchain/jsstore) and drive it with the
// SDK's clients (chat.Client, files).
//
// The default run (go test -race ./internal/testenv/systemtest) uses small scales
// and takes well under a minute. KEZ_LONG=1 runs the full scales (200
// clients × 100 messages, the cluster under load) and prints the figures
// that docs/security.md records:
//
//	KEZ_LONG=1 go test -race -run . -v -timeout 30m ./internal/testenv/systemtest
//
// -short skips everything that starts a nats-server process.
package systemtest
