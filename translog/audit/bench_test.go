package audit_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/kez-lat/kez-chat/translog/audit"
)

// BenchmarkAudit audits, from scratch, a sig-server's log of 2,000 links
// of 200 chains (10 links each): reading and proving the entries, and
// fetching, verifying and comparing every chain. It reports entries/s.
func BenchmarkAudit(b *testing.B) {
	const chains, links = 200, 10
	r, _ := newLoggingRig(b) // the server logs each link it stores
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range chains {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			r.grow(b, newChain(b, fmt.Sprint("bench ", i)), links)
		})
	}
	wg.Wait()
	if b.Failed() {
		return
	}
	dir := b.TempDir()
	n := 0
	for b.Loop() {
		n++
		c := r.config()
		c.State = filepath.Join(dir, fmt.Sprintf("audit%d.db", n))
		s, err := audit.Run(context.Background(), c)
		if err != nil {
			b.Fatal(err)
		}
		if s.Entries != chains*links || s.Keys != chains || len(s.Findings) != 0 {
			b.Fatalf("audited %d entries, %d chains, findings %v", s.Entries, s.Keys, s.Findings)
		}
	}
	b.ReportMetric(float64(n*chains*links)/b.Elapsed().Seconds(), "entries/s")
}
