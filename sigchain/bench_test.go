package sigchain

import (
	"crypto/ed25519"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/kez"
)

// benchNow is after every ctime of a bench chain.
const benchNow = vectorNow + 1<<20

// benchChain builds an n-link chain mixing every link type, with ~1 KiB
// manifests.
func benchChain(tb testing.TB, n int) []*Link {
	alice := testIdentity(tb, aliceWords)
	b := newBuilder(tb, alice, "alice@kez.lat")
	b.now = benchNow
	manifest := []byte(`{"files":[` + strings.Repeat(`{"cid":"bafkreihjzjg3wnrjs4drdvnxu4dptaf6xotahr7ps2i2vjx65dx5fazw6a","name":"report.pdf","size":123456},`, 9) + `{}]}`)
	var claim *Link
	gen := uint32(0)
	for i := 1; len(b.links) < n; i++ {
		switch i % 5 {
		case 0:
			claim = b.add(TypeAddClaim, AddClaimBody("github", fmt.Sprintf("alice%d", i), "https://gist.github.com/alice/1"))
		case 1:
			if claim != nil {
				b.add(TypeRevokeClaim, RevokeClaimBody(claim.ID()))
				claim = nil
			}
		case 2:
			b.add(TypeSetSharedFiles, manifest)
		case 3:
			b.add(TypeSetHandle, SetHandleBody(fmt.Sprintf("alice%d@kez.lat", i)))
		case 4:
			gen++
			b.add(TypeSetEncryptionKey, SetEncryptionKeyBody(alice.EncryptionKey(gen).PublicKey(), gen))
		}
	}
	return b.links
}

// signedMessages returns what ed25519 verifies for each link: the raw
// baseline work.
func signedMessages(tb testing.TB, links []*Link) [][]byte {
	out := make([][]byte, len(links))
	for i, l := range links {
		m, err := kez.SignedMessage(kez.ContextSigchainLink, l.SignedPayload())
		if err != nil {
			tb.Fatal(err)
		}
		out[i] = m
	}
	return out
}

// BenchmarkVerify compares verifying a 1,000-link chain with the raw
// ed25519.Verify calls it cannot avoid, in the same run.
func BenchmarkVerify(b *testing.B) {
	const n = 1000
	links := benchChain(b, n)
	msgs := signedMessages(b, links)
	key := links[0].Key()
	b.Run("raw_ed25519", func(b *testing.B) {
		for b.Loop() {
			for i, l := range links {
				if !ed25519.Verify(key[:], msgs[i], l.sig[:]) {
					b.Fatal("bad signature")
				}
			}
		}
		b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "verifies/s")
	})
	b.Run("chain_1000", func(b *testing.B) {
		for b.Loop() {
			if _, err := Verify(links, fixedClock(benchNow)); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "links/s")
	})
	raw := make([][]byte, n)
	for i, l := range links {
		raw[i] = l.Bytes()
	}
	b.Run("parse_and_chain_1000", func(b *testing.B) {
		for b.Loop() {
			parsed := make([]*Link, n)
			for i, r := range raw {
				l, err := ParseLink(r)
				if err != nil {
					b.Fatal(err)
				}
				parsed[i] = l
			}
			if _, err := Verify(parsed, fixedClock(benchNow)); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "links/s")
	})
	// Interleaved: each iteration measures both by the CPU time of this
	// thread, so neither machine drift nor other processes on the shared
	// cores skew the ratio; pct_of_raw is chain links/s as a share of raw
	// verifies/s.
	b.Run("interleaved", func(b *testing.B) {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var rawT, chainT, parseT time.Duration
		rawRun := func() {
			for i, l := range links {
				ed25519.Verify(key[:], msgs[i], l.sig[:])
			}
		}
		chainRun := func() {
			if _, err := Verify(links, fixedClock(benchNow)); err != nil {
				b.Fatal(err)
			}
		}
		timed := func(f func()) time.Duration { t := threadCPU(); f(); return threadCPU() - t }
		for i := 0; b.Loop(); i++ {
			if i%2 == 0 { // alternate the order so drift does not favour one
				rawT += timed(rawRun)
				chainT += timed(chainRun)
			} else {
				chainT += timed(chainRun)
				rawT += timed(rawRun)
			}
			parseT += timed(func() {
				for _, r := range raw {
					if _, err := ParseLink(r); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
		b.ReportMetric(float64(n*b.N)/rawT.Seconds(), "raw_verifies/cpu-s")
		b.ReportMetric(float64(n*b.N)/chainT.Seconds(), "chain_links/cpu-s")
		b.ReportMetric(float64(n*b.N)/(chainT+parseT).Seconds(), "parse+chain_links/cpu-s")
		b.ReportMetric(100*rawT.Seconds()/chainT.Seconds(), "pct_of_raw")
		b.ReportMetric(100*rawT.Seconds()/(chainT+parseT).Seconds(), "pct_of_raw_with_parse")
	})
}

func BenchmarkParseLink(b *testing.B) {
	links := benchChain(b, 10)
	raw := links[len(links)-1].Bytes()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := ParseLink(raw); err != nil {
			b.Fatal(err)
		}
	}
}
