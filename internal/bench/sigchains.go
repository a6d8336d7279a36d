package bench

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// measureSigchains verifies a chain of cfg.ChainLinks links from its bytes
// (sigchain.ParseLink of each, then sigchain.Verify of the whole chain, as
// a client does with what the sig-server sends) against raw
// ed25519.Verify of the same signed bytes, one goroutine each, in
// alternating rounds of cfg.Duration.
func measureSigchains(cfg Config) ([]Figure, error) {
	id, err := benchIdentity("chain")
	if err != nil {
		return nil, err
	}
	raws, err := buildChain(id, max(2, cfg.ChainLinks))
	if err != nil {
		return nil, err
	}
	// What ed25519 actually checks for each link.
	pub := ed25519.PublicKey(id.PublicKey().Ed25519())
	msgs := make([][]byte, len(raws))
	sigs := make([][]byte, len(raws))
	for i, b := range raws {
		l, err := sigchain.ParseLink(b)
		if err != nil {
			return nil, err
		}
		if msgs[i], err = kez.SignedMessage(kez.ContextSigchainLink, l.SignedPayload()); err != nil {
			return nil, err
		}
		sigs[i] = l.Signature()
	}

	verifyChain := func() error {
		links := make([]*sigchain.Link, len(raws))
		for i, b := range raws {
			l, err := sigchain.ParseLink(b)
			if err != nil {
				return err
			}
			links[i] = l
		}
		_, err := sigchain.Verify(links)
		return err
	}
	verifyRaw := func() error {
		for i := range msgs {
			if !ed25519.Verify(pub, msgs[i], sigs[i]) {
				return errors.New("a link signature does not verify")
			}
		}
		return nil
	}
	var chain, raw phaseTime
	for range max(1, cfg.Rounds) {
		n, d, err := repeat(cfg.Duration, verifyRaw)
		if err != nil {
			return nil, err
		}
		raw.add(n*len(raws), d)
		if n, d, err = repeat(cfg.Duration, verifyChain); err != nil {
			return nil, fmt.Errorf("verifying the chain: %w", err)
		}
		chain.add(n*len(raws), d)
	}
	return []Figure{{Group: "sigchains", Name: fmt.Sprintf("links verified (chain of %d, parse+Verify)", len(raws)), Unit: "links/s",
		Value: chain.rate(), Baseline: "ed25519.Verify", Base: raw.rate(), Goal: MinRatio, Target: 0.80,
		Note: "one goroutine each; the baseline verifies the same signed bytes"}}, nil
}

// buildChain returns the bytes of a chain of n links: the eldest, then
// add_claim links.
func buildChain(id *kez.Identity, n int) ([][]byte, error) {
	links, err := (&chainWriter{id: id, name: "chain"}).next(n)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(links))
	for i, l := range links {
		out[i] = l.Bytes()
	}
	return out, nil
}

// repeat calls fn until d has passed (at least once) and returns the calls
// and the time they took.
func repeat(d time.Duration, fn func() error) (int, time.Duration, error) {
	start := time.Now()
	n := 0
	for n == 0 || time.Since(start) < d {
		if err := fn(); err != nil {
			return 0, 0, err
		}
		n++
	}
	return n, time.Since(start), nil
}
