package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kez-lat/kez-chat/files"
)

// sourcesTarget is the target of a fetch from 3 sources over one from a
// single source, each source's upload capped at the same rate.
const sourcesTarget = 2.5

// measureSources fetches one blob of cfg.SourcesBlob random bytes over
// loopback from three nodes that each serve it with their upload capped at
// cfg.SourcesRate (files.NodeConfig.MaxUploadRate), against the same
// fetch from one of them alone (files.WithSources adds the other two).
// Rounds alternate the two; each figure is the median round's rate.
func measureSources(ctx context.Context, cfg Config, dir string) ([]Figure, error) {
	src := filepath.Join(dir, "blob")
	if err := writeRandom(src, cfg.SourcesBlob); err != nil {
		return nil, err
	}
	fs := files.NewFileSource()
	tree, err := fs.AddFile(src)
	if err != nil {
		return nil, err
	}
	listen := []string{"/ip4/127.0.0.1/tcp/0"}
	var sources []*files.Node
	defer func() {
		for _, n := range sources {
			n.Close()
		}
	}()
	for i := range 3 {
		id, err := benchIdentity(fmt.Sprintf("source%d", i))
		if err != nil {
			return nil, err
		}
		n, err := files.NewNode(files.NodeConfig{Identity: id, ListenAddrs: listen, Source: fs, MaxUploadRate: cfg.SourcesRate})
		if err != nil {
			return nil, err
		}
		sources = append(sources, n)
	}
	id, err := benchIdentity("sources fetcher")
	if err != nil {
		return nil, err
	}
	fetcher, err := files.NewNode(files.NodeConfig{Identity: id, ListenAddrs: listen})
	if err != nil {
		return nil, err
	}
	defer fetcher.Close()
	for _, n := range sources {
		if err := fetcher.Host().Connect(ctx, n.AddrInfo()); err != nil {
			return nil, err
		}
	}
	dst := filepath.Join(dir, "dst")
	var one, three phaseTime
	for range max(1, cfg.Rounds) {
		d, err := timed(func() error {
			return fetcher.Fetch(ctx, sources[0].AddrInfo(), tree.CID(), dst, files.WithoutSync())
		})
		if err != nil {
			return nil, fmt.Errorf("fetch from one source: %w", err)
		}
		one.add(int(cfg.SourcesBlob), d)
		os.Remove(dst)
		if d, err = timed(func() error {
			return fetcher.Fetch(ctx, sources[0].AddrInfo(), tree.CID(), dst, files.WithoutSync(),
				files.WithSources(sources[1].AddrInfo(), sources[2].AddrInfo()))
		}); err != nil {
			return nil, fmt.Errorf("fetch from three sources: %w", err)
		}
		three.add(int(cfg.SourcesBlob), d)
		os.Remove(dst)
	}
	return []Figure{{Group: "sources", Name: "fetch from 3 sources " + sizeMiB(cfg.SourcesBlob), Unit: "MB/s", Value: three.rate() / 1e6,
		Baseline: "1 source", Base: one.rate() / 1e6, Goal: MinRatio, Target: sourcesTarget,
		Note: fmt.Sprintf("Node.Fetch over libp2p TCP on 127.0.0.1, every source's upload capped at %.0f MB/s (NodeConfig.MaxUploadRate); with 3 sources the blob is split into 4 MiB tasks taken by each source's worker", float64(cfg.SourcesRate)/1e6)}}, nil
}
