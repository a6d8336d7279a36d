package testlog

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

func TestBufferConcurrentWriters(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 100 {
				fmt.Fprintf(&b, "w%d line %d\n", i, j)
				_ = b.String() // reading while others write
			}
		}()
	}
	wg.Wait()
	if n := strings.Count(b.String(), "\n"); n != 800 {
		t.Fatalf("%d lines, want 800", n)
	}
}

func TestTail(t *testing.T) {
	var b Buffer
	b.Write([]byte("0123456789"))
	if got := b.Tail(4); got != "…6789" {
		t.Errorf("Tail(4) = %q", got)
	}
	if got := b.Tail(10); got != "0123456789" {
		t.Errorf("Tail(10) = %q", got)
	}
}
