//go:build race

package systemtest

// raceEnabled: the tests run under the race detector, which makes the
// callout several times slower; load tests scale down.
const raceEnabled = true
