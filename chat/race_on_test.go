//go:build race

package chat

// raceEnabled: the tests run under the race detector, which makes the
// pure-Go SQLite of chat.db many times slower; tests that move large
// histories use smaller ones then (their full size runs without -race and
// in kez-bench's devices group).
const raceEnabled = true
