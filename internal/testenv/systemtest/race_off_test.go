//go:build !race

package systemtest

// raceEnabled: see race_on_test.go.
const raceEnabled = false
