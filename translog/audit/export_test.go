package audit

import (
	"context"
	"time"
)

// SetWait replaces how the audit waits out a 429 answer (a test moves a
// fake clock instead) until the test ends.
func SetWait(t interface{ Cleanup(func()) }, f func(ctx context.Context, d time.Duration) error) {
	old := wait
	wait = f
	t.Cleanup(func() { wait = old })
}

// SetBatchBundles sets how many entry bundles a batch covers until the
// test ends.
func SetBatchBundles(t interface{ Cleanup(func()) }, n uint64) {
	old := batchBundles
	batchBundles = n
	t.Cleanup(func() { batchBundles = old })
}
