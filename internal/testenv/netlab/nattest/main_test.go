package nattest

import (
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	if role := os.Getenv(envChild); role != "" {
		os.Exit(childMain(role))
	}
	code := m.Run()
	removeBinaries()
	os.Exit(code)
}
