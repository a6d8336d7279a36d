//go:build !race

package chat

// raceEnabled: see race_on_test.go.
const raceEnabled = false
