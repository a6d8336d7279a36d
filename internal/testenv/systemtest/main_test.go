package systemtest

import (
	"os"
	"testing"
)

// envChild names the environment variable that turns this test binary
// into a helper child process (see faults_disk_linux_test.go).
const envChild = "KEZ_SYSTEMTEST_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(envChild); mode != "" {
		os.Exit(childMain(mode))
	}
	code := m.Run()
	removeBinaries()
	os.Exit(code)
}
