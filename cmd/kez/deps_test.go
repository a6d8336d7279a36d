package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestClientDependencies checks that the client binary links none of the
// servers' packages (the chat-server, the auth callout, the stores): what
// it needs of a chat-server (/v1/info) is client code in package handles.
// Nor the test environments (internal/testenv: stacks, fixtures).
func TestClientDependencies(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if !strings.Contains(string(out), "github.com/kez-lat/kez-chat/chat\n") {
		t.Fatalf("go list -deps does not list package chat:\n%s", out)
	}
	for _, dep := range deps {
		for _, server := range []string{"/chatserver", "/callout", "/handles/jsstore", "/sigchain/jsstore", "/sigchain/sqlitestore", "github.com/nats-io/nats-server/", "/internal/testenv/"} {
			if strings.Contains(dep, server) {
				t.Errorf("cmd/kez depends on %s", dep)
			}
		}
	}
}
