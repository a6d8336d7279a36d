package systemtest

import "testing"

// TestProcStack: the process stack starts, and a user registers on it.
func TestProcStack(t *testing.T) {
	st := startProcStack(t, procOptions{})
	u := st.register(t, "alice")
	if u.handle.String() != "alice@"+procDomain {
		t.Fatalf("registered %s", u.handle)
	}
}
