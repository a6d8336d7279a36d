package stacktest

import (
	"testing"
	"time"
)

// Prompt bounds how long [Returns] waits for a call that should return at
// once: a stuck call fails the test instead of hanging it.
const Prompt = 10 * time.Second

// Returns waits for the result of a call that should return now (what
// names it) and fails the test after [Prompt].
func Returns(t testing.TB, what string, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(Prompt):
		t.Fatalf("%s did not return within %v", what, Prompt)
		return nil
	}
}
