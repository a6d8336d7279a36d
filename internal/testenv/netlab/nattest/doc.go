// Package nattest holds the NAT tests of file sharing: hole punching,
// relays and their failures over real NATs, in network namespaces built
// with netlab, with every program (NATS, the chat-server, the
// sig-server, kez-relay, two kez CLIs) running as a process in its
// namespace. There is no non-test code here besides this comment.
//
// The tests need root and skip, saying why, where the kernel refuses
// network namespaces; a missing ip, tc or nft fails them (see netlab).
// They share one topology (a public net and two NAT sites) per case and
// build the binaries once per test binary.
//
// The figures (time to a hole-punched connection, hole-punched and
// relayed throughput against a direct connection) are benchmarks:
//
//	go test -run '^$' -bench . -benchtime 1x ./internal/testenv/netlab/nattest
package nattest
