package files

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/files/format"
	"github.com/libp2p/go-libp2p/core/network"
	"lukechampine.com/blake3"
)

// Run with: go test -run '^$' -bench . -benchtime=3x ./files
//
// BenchmarkTransfer moves the same 256 MiB file over raw TCP, over a raw
// libp2p stream (TCP and QUIC), and with Node.Fetch (verified, written to a
// file), so the ratios in one run show what the blob protocol costs.

const benchBlobSize = 256 << 20

const rawProto = "/kez/bench/raw/1"

// cpuMeter reports, beside the wall-clock MB/s, the MB moved per CPU-second
// of the whole process (both ends): the measure to compare on a shared
// machine, where wall time includes waiting for a core.
type cpuMeter struct{ start, paused, used time.Duration }

func startCPU(b *testing.B) *cpuMeter { b.ResetTimer(); return &cpuMeter{start: processCPU()} }

// pause and resume leave cleanup between iterations out of both measures.
func (m *cpuMeter) pause(b *testing.B) { b.StopTimer(); m.paused = processCPU() }

func (m *cpuMeter) resume(b *testing.B) { m.used += processCPU() - m.paused; b.StartTimer() }

func (m *cpuMeter) report(b *testing.B, bytes int64) {
	if used := processCPU() - m.start - m.used; used > 0 {
		b.ReportMetric(float64(bytes)*float64(b.N)/1e6/used.Seconds(), "MB/cpu-s")
	}
}

// serveRaw writes the file's bytes to w the way a Node does: ReadAt into a
// buffer of serveBufSize, then Write.
func serveRaw(w io.Writer, f *os.File, size int64) error {
	buf := make([]byte, serveBufSize)
	for off := int64(0); off < size; {
		m := int(min(int64(len(buf)), size-off))
		if _, err := f.ReadAt(buf[:m], off); err != nil && err != io.EOF {
			return err
		}
		if _, err := w.Write(buf[:m]); err != nil {
			return err
		}
		off += int64(m)
	}
	return nil
}

// drain reads size bytes in ChunkSize pieces and discards them.
func drain(b *testing.B, r io.Reader, size int64) {
	buf := make([]byte, format.ChunkSize)
	for got := int64(0); got < size; {
		m := int(min(int64(len(buf)), size-got))
		if _, err := io.ReadFull(r, buf[:m]); err != nil {
			b.Fatal(err)
		}
		got += int64(m)
	}
}

func BenchmarkTransfer(b *testing.B) {
	dir := b.TempDir()
	src := writePattern(b, dir, "src", benchBlobSize)
	f, err := os.Open(src)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	tree, err := format.HashFile(src)
	if err != nil {
		b.Fatal(err)
	}

	b.Run("raw-tcp", func(b *testing.B) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					var one [1]byte
					if _, err := c.Read(one[:]); err == nil {
						serveRaw(c, f, benchBlobSize)
					}
				}()
			}
		}()
		b.SetBytes(benchBlobSize)
		cpu := startCPU(b)
		for i := 0; i < b.N; i++ {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			c.Write([]byte{1})
			drain(b, c, benchBlobSize)
			c.Close()
		}
		cpu.report(b, benchBlobSize)
	})

	for _, tr := range []string{"tcp", "quic"} {
		b.Run("raw-libp2p-"+tr, func(b *testing.B) {
			p := newPair(b, tr, nil)
			p.owner.Host().SetStreamHandler(rawProto, func(s network.Stream) {
				defer s.Close()
				var one [1]byte
				if _, err := s.Read(one[:]); err == nil {
					serveRaw(s, f, benchBlobSize)
				}
			})
			ctx := context.Background()
			if err := p.fetcher.Host().Connect(ctx, p.owner.AddrInfo()); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(benchBlobSize)
			cpu := startCPU(b)
			for i := 0; i < b.N; i++ {
				s, err := p.fetcher.Host().NewStream(ctx, p.owner.ID(), rawProto)
				if err != nil {
					b.Fatal(err)
				}
				s.Write([]byte{1})
				drain(b, s, benchBlobSize)
				s.Close()
			}
			cpu.report(b, benchBlobSize)
		})
		// fetch-*: the destination is on a memory file system when there is
		// one (/dev/shm), so the figure is the protocol's cost, not the
		// disk's; fetch-*-disk-fsync writes to the test's temporary folder
		// and fsyncs, as Fetch does by default.
		for _, disk := range []bool{false, true} {
			name := "fetch-" + tr
			var opts []FetchOption
			if disk {
				name += "-disk-fsync"
			} else {
				opts = append(opts, WithoutSync())
			}
			b.Run(name, func(b *testing.B) {
				p := newPair(b, tr, nil)
				p.src.Add(src, tree)
				ctx := context.Background()
				if err := p.fetcher.Host().Connect(ctx, p.owner.AddrInfo()); err != nil {
					b.Fatal(err)
				}
				dir := p.dir
				if !disk {
					dir = memDir(b)
				}
				fetchRounds(b, p, tree, filepath.Join(dir, "dst"), opts)
			})
		}
	}
}

// memDir returns a fresh folder on /dev/shm if the system has it, else
// the test's temporary folder.
func memDir(b *testing.B) string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "kez-files-bench"); err == nil {
			b.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return b.TempDir()
}

// BenchmarkHash compares the leaf hashing of a blob (SHA-256 per 256 KiB
// chunk, the format) with plain SHA-256 and BLAKE3 over the same bytes.
func BenchmarkHash(b *testing.B) {
	data := pattern(64 << 20)
	b.Run("tree-sha256", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for i := 0; i < b.N; i++ {
			if _, err := format.BuildTree(bytes.NewReader(data)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("tree-sha256-parallel", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for i := 0; i < b.N; i++ {
			if _, err := format.HashReaderAt(bytes.NewReader(data), int64(len(data))); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sha256", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for i := 0; i < b.N; i++ {
			sha256.Sum256(data)
		}
	})
	b.Run("blake3-lukechampine", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for i := 0; i < b.N; i++ {
			blake3.Sum256(data)
		}
	})
	b.Run("blake3-lukechampine-per-chunk", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for i := 0; i < b.N; i++ {
			for off := 0; off < len(data); off += format.ChunkSize {
				blake3.Sum256(data[off : off+format.ChunkSize])
			}
		}
	})
}

// BenchmarkFetchPublic and BenchmarkFetchPrivate fetch the same amount
// of plaintext over libp2p TCP on loopback into a memory file system: a
// public blob, and a private one decrypted as it streams in
// ([WithDecryption]); their ratio is the cost of the decryption.
func BenchmarkFetchPublic(b *testing.B) { benchFetch(b, false) }

func BenchmarkFetchPrivate(b *testing.B) { benchFetch(b, true) }

func benchFetch(b *testing.B, private bool) {
	p := newPair(b, "tcp", nil)
	src := writePattern(b, p.dir, "src", benchBlobSize)
	var opts []FetchOption
	if private {
		enc := filepath.Join(p.dir, "enc")
		key, size, err := format.EncryptFile(enc, src)
		if err != nil {
			b.Fatal(err)
		}
		src = enc
		opts = append(opts, WithDecryption(key, size))
	}
	tree, err := p.src.AddFile(src)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := p.fetcher.Host().Connect(ctx, p.owner.AddrInfo()); err != nil {
		b.Fatal(err)
	}
	fetchRounds(b, p, tree, filepath.Join(memDir(b), "dst"), append(opts, WithoutSync()))
}

// fetchRounds fetches tree's blob to dst b.N times, timed, and reports the
// CPU used.
func fetchRounds(b *testing.B, p pair, tree *format.Tree, dst string, opts []FetchOption) {
	ctx := context.Background()
	b.SetBytes(benchBlobSize)
	cpu := startCPU(b)
	for i := 0; i < b.N; i++ {
		if err := p.fetcher.Fetch(ctx, p.owner.AddrInfo(), tree.CID(), dst, opts...); err != nil {
			b.Fatal(err)
		}
		cpu.pause(b)
		os.Remove(dst)
		cpu.resume(b)
	}
	cpu.report(b, benchBlobSize)
}
