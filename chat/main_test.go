package chat

import (
	"os"
	"testing"
)

// envCrashChild turns this test binary into the child process of the crash
// test (crash_test.go): a client that sends until it is killed.
const envCrashChild = "KEZ_CHAT_CRASH_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(envCrashChild); mode != "" {
		os.Exit(crashChild(mode))
	}
	os.Exit(m.Run())
}
