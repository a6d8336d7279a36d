package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/files/format"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// rawProto is the libp2p protocol of the raw-stream baseline.
const rawProto = protocol.ID("/kez/bench/raw/1")

// copyBuf is the buffer of the raw baselines' reads and writes.
const copyBuf = 1 << 20

// measureFiles moves one blob of cfg.BlobSize random bytes over loopback:
// raw TCP, a raw libp2p stream between the two KEZ nodes, a verified
// Node.Fetch, a private fetch (the encrypted blob decrypted as it streams in)
// and, when croc is available, croc through its own relay. Every path
// reads the source file and writes a destination file in dir (a memory
// file system when there is one), so the figures compare the transports,
// not the disk. Rounds alternate the paths; each figure is total bytes over
// total time.
func measureFiles(ctx context.Context, cfg Config, dir string) ([]Figure, error) {
	size := cfg.BlobSize
	src := filepath.Join(dir, "blob")
	if err := writeRandom(src, size); err != nil {
		return nil, err
	}
	enc := filepath.Join(dir, "blob.enc")
	key, _, err := format.EncryptFile(enc, src)
	if err != nil {
		return nil, err
	}
	fs := files.NewFileSource()
	owner, fetcher, err := nodePair(fs)
	if err != nil {
		return nil, err
	}
	defer owner.Close()
	defer fetcher.Close()
	tree, err := fs.AddFile(src)
	if err != nil {
		return nil, err
	}
	encTree, err := fs.AddFile(enc)
	if err != nil {
		return nil, err
	}
	if err := fetcher.Host().Connect(ctx, owner.AddrInfo()); err != nil {
		return nil, err
	}
	srcFile, err := os.Open(src)
	if err != nil {
		return nil, err
	}
	defer srcFile.Close()

	// Raw TCP server.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); serveFile(c, srcFile, size) }()
		}
	}()
	// Raw libp2p stream server, on the owner's host.
	owner.Host().SetStreamHandler(rawProto, func(s network.Stream) {
		defer s.Close()
		serveFile(s, srcFile, size)
	})

	dst := filepath.Join(dir, "dst")
	var tcp, p2p, fetch, private phaseTime
	var cpuP2P, cpuFetch, cpuPrivate time.Duration
	for range max(1, cfg.Rounds) {
		d, err := timed(func() error {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				return err
			}
			defer c.Close()
			return receiveFile(c, dst, size)
		})
		if err != nil {
			return nil, fmt.Errorf("raw TCP: %w", err)
		}
		tcp.add(int(size), d)
		if d, err = cpuTimed(&cpuP2P, func() error {
			s, err := fetcher.Host().NewStream(ctx, owner.ID(), rawProto)
			if err != nil {
				return err
			}
			defer s.Close()
			return receiveFile(s, dst, size)
		}); err != nil {
			return nil, fmt.Errorf("raw libp2p stream: %w", err)
		}
		p2p.add(int(size), d)
		os.Remove(dst)
		if d, err = cpuTimed(&cpuFetch, func() error {
			return fetcher.Fetch(ctx, owner.AddrInfo(), tree.CID(), dst, files.WithoutSync())
		}); err != nil {
			return nil, fmt.Errorf("verified fetch: %w", err)
		}
		fetch.add(int(size), d)
		os.Remove(dst)
		if d, err = cpuTimed(&cpuPrivate, func() error {
			return fetcher.Fetch(ctx, owner.AddrInfo(), encTree.CID(), dst, files.WithoutSync(), files.WithDecryption(key, size))
		}); err != nil {
			return nil, fmt.Errorf("private fetch: %w", err)
		}
		private.add(int(size), d)
		os.Remove(dst)
	}
	label := sizeMiB(size)
	out := []Figure{
		{Group: "files", Name: "verified fetch " + label, Unit: "MB/s", Value: fetch.rate() / 1e6,
			Baseline: "raw libp2p stream", Base: p2p.rate() / 1e6, Goal: MinRatio, Target: 0.70,
			Note: fmt.Sprintf("Node.Fetch (every 256 KiB chunk checked against the CID, written to a file) over libp2p TCP on 127.0.0.1; the baseline streams the same file over the same connection into a file; CPU (both ends) per MB: fetch %.1f ms, raw stream %.1f ms",
				perMB(cpuFetch, fetch.n), perMB(cpuP2P, p2p.n)),
			CPURatio: cpuRatio([]time.Duration{cpuP2P}, p2p.n, []time.Duration{cpuFetch}, fetch.n)},
		{Group: "files", Name: "raw libp2p stream " + label, Unit: "MB/s", Value: p2p.rate() / 1e6,
			Baseline: "raw TCP", Base: tcp.rate() / 1e6},
		{Group: "files", Name: "private fetch " + label, Unit: "MB/s", Value: private.rate() / 1e6,
			Baseline: "verified fetch", Base: fetch.rate() / 1e6, Goal: MinRatio, Target: 0.8,
			Note: fmt.Sprintf("Node.Fetch WithDecryption of the encrypted blob (each chunk checked against the CID, then decrypted segment by segment as it streams in, the plaintext written to a file); MB of plaintext; the baseline is the public fetch of the same run; CPU per MB: private %.1f ms, public %.1f ms",
				perMB(cpuPrivate, private.n), perMB(cpuFetch, fetch.n)),
			CPURatio: cpuRatio([]time.Duration{cpuFetch}, fetch.n, []time.Duration{cpuPrivate}, private.n)},
		{Group: "files", Name: "private fetch " + label, Unit: "MB/s", Value: private.rate() / 1e6,
			Baseline: "raw libp2p stream", Base: p2p.rate() / 1e6},
	}
	croc := Figure{Group: "files", Name: "verified fetch " + label, Unit: "MB/s", Value: fetch.rate() / 1e6,
		Baseline: "croc", Goal: MinRatio, Target: 5}
	if cfg.Croc == "" {
		croc.Skipped = cfg.CrocSkip
		if croc.Skipped == "" {
			croc.Skipped = "croc is not on PATH"
		}
	} else if d, err := runCroc(ctx, cfg.Croc, src, size, dir); err != nil {
		croc.Skipped = "croc failed: " + err.Error()
	} else {
		croc.Base = float64(size) / d.Seconds() / 1e6
		croc.Note = "croc send/receive through its own relay, all three in a private network namespace with only loopback; wall time of the receiver"
	}
	return append(out, croc), nil
}

func perMB(cpu time.Duration, bytes int) float64 {
	if bytes == 0 {
		return 0
	}
	return float64(cpu.Microseconds()) / 1e3 / (float64(bytes) / 1e6)
}

func sizeMiB(n int64) string { return fmt.Sprintf("%d MiB", n>>20) }

func timed(fn func() error) (time.Duration, error) {
	start := time.Now()
	err := fn()
	return time.Since(start), err
}

// cpuTimed is timed that also adds the CPU this process used to *cpu.
func cpuTimed(cpu *time.Duration, fn func() error) (time.Duration, error) {
	c0 := processCPU(os.Getpid())
	d, err := timed(fn)
	*cpu += processCPU(os.Getpid()) - c0
	return d, err
}

// writeRandom writes n bytes that do not compress (croc compresses).
func writeRandom(path string, n int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	rng := rand.NewChaCha8([32]byte{'k', 'e', 'z'})
	buf := make([]byte, copyBuf)
	for left := n; left > 0; {
		m := min(int64(len(buf)), left)
		rng.Read(buf[:m])
		if _, err := f.Write(buf[:m]); err != nil {
			f.Close()
			return err
		}
		left -= m
	}
	return f.Close()
}

// serveFile writes the file's first size bytes to w.
func serveFile(w io.Writer, f *os.File, size int64) error {
	_, err := io.CopyBuffer(onlyWriter{w}, io.NewSectionReader(f, 0, size), make([]byte, copyBuf))
	return err
}

// receiveFile writes size bytes from r into a new file at path.
func receiveFile(r io.Reader, path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	n, err := io.CopyBuffer(f, onlyReader{io.LimitReader(r, size)}, make([]byte, copyBuf))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && n != size {
		err = fmt.Errorf("received %d of %d bytes", n, size)
	}
	return err
}

// onlyWriter and onlyReader hide ReadFrom/WriteTo, so every path copies
// through a user-space buffer as the blob protocol does (no sendfile or
// splice shortcut for TCP alone).
type onlyWriter struct{ io.Writer }
type onlyReader struct{ io.Reader }

// memDir returns a fresh folder on a memory file system (/dev/shm) if
// there is one, else under os.TempDir, and a function removing it.
func memDir() (string, func(), error) {
	base := ""
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		base = "/dev/shm"
	}
	d, err := os.MkdirTemp(base, "kez-bench-files-")
	if err != nil && base != "" {
		d, err = os.MkdirTemp("", "kez-bench-files-")
	}
	if err != nil {
		return "", nil, err
	}
	return d, func() { os.RemoveAll(d) }, nil
}

// nodePair starts two KEZ file nodes on 127.0.0.1 (TCP only): an owner
// serving src to everyone, and a fetcher.
func nodePair(src files.BlobSource) (owner, fetcher *files.Node, err error) {
	ids := make([]*kez.Identity, 2)
	for i, name := range []string{"owner", "fetcher"} {
		if ids[i], err = benchIdentity(name); err != nil {
			return nil, nil, err
		}
	}
	listen := []string{"/ip4/127.0.0.1/tcp/0"}
	if owner, err = files.NewNode(files.NodeConfig{Identity: ids[0], ListenAddrs: listen, Source: src}); err != nil {
		return nil, nil, err
	}
	if fetcher, err = files.NewNode(files.NodeConfig{Identity: ids[1], ListenAddrs: listen}); err != nil {
		owner.Close()
		return nil, nil, err
	}
	return owner, fetcher, nil
}
