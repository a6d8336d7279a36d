package natstest

import (
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago and
// that no earlier call in this process returned (the kernel may hand out
// a port it just took back: a cluster node once got its monitor port as
// its route port too). The port is released before it is returned, so
// another process could take it in between; servers that can pick their
// own port (Port: -1) should.
func FreePort(t testing.TB) int {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("natstest: finding a free port: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		if err := l.Close(); err != nil {
			t.Fatalf("natstest: releasing port %d: %v", port, err)
		}
		handedMu.Lock()
		_, taken := handed[port]
		handed[port] = struct{}{}
		handedMu.Unlock()
		if !taken {
			return port
		}
	}
	t.Fatal("natstest: no port that was not handed out before")
	return 0
}

var (
	handedMu sync.Mutex
	handed   = map[int]struct{}{} // ports FreePort returned
)

// WriteConfig writes configuration text to nats.conf in a fresh temporary
// folder (mode 0600, it may hold keys) and returns the file's path.
func WriteConfig(t testing.TB, conf string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatalf("natstest: writing config: %v", err)
	}
	return path
}
