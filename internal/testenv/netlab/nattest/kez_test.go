package nattest

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/netlab"
)

func TestKezFetchDirect(t *testing.T) {
	tp := netlab.NewTopology(t, netlab.EndpointIndependent)
	s := startStack(t, tp, stackOptions{})
	alice := s.NewUser(t, "alice", tp.Open)
	bob := s.NewUser(t, "bob", tp.Sites[0].Host)
	file := writeFile(t, "data.bin", 8<<20, 1)
	alice.MustRun(t, "share", file)
	alice.Serve(t)
	out := filepath.Join(t.TempDir(), "got.bin")
	r := bob.Run(t, time.Minute, "fetch", "alice", "data.bin", "-o", out)
	t.Logf("exit %d in %s\n%s\n%s", r.code, r.took, r.stdout, r.stderr)
	sameFile(t, file, out)
}
