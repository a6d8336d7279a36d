package chatserver

import "testing"

// SetKickPageSize makes the kicker ask for n connections per server at a
// time until t ends, so that a test reaches past one page with a few.
func SetKickPageSize(t testing.TB, n int) {
	old := kickPageSize
	kickPageSize = n
	t.Cleanup(func() { kickPageSize = old })
}
