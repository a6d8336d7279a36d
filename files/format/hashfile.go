package format

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
)

// HashFile reads the file at path and returns its hash tree, hashing
// chunks on every available core.
func HashFile(path string) (*Tree, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	t, err := HashReaderAt(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("files: hashing %s: %w", path, err)
	}
	return t, nil
}

// HashReaderAt returns the hash tree of the size bytes r holds, hashing
// chunks in parallel on GOMAXPROCS goroutines (r must allow concurrent
// ReadAt, as *os.File does).
func HashReaderAt(r io.ReaderAt, size int64) (*Tree, error) {
	if size < 0 || size > MaxBlobSize {
		return nil, fmt.Errorf("files: blob size %d is outside 0..%d", size, int64(MaxBlobSize))
	}
	n := NumChunks(size)
	leaves := make([]Hash, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	for w := 0; w < min(runtime.GOMAXPROCS(0), n); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, ChunkSize)
			lh := NewLeafHasher()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				b := buf[:ChunkLen(size, i)]
				if k, err := r.ReadAt(b, int64(i)*ChunkSize); k < len(b) {
					if err == nil || err == io.EOF {
						err = io.ErrUnexpectedEOF
					}
					select {
					case errs <- fmt.Errorf("reading chunk %d: %w", i, err):
					default:
					}
					next.Store(int64(n)) // stop the others
					return
				}
				leaves[i] = lh.Sum(b)
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		return nil, err
	default:
	}
	return NewTree(size, leaves)
}
