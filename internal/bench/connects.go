package bench

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// measureConnects logs in and out as fast as cfg.ConnectWorkers
// goroutines can, through the auth callout (registered users, chat.Connect)
// and, as the baseline, as a plain nkey user listed in nats.conf, in
// alternating rounds of cfg.Duration each.
func measureConnects(ctx context.Context, st *Stack, cfg Config, users []*User) ([]Figure, error) {
	fig := Figure{Group: "connects", Name: "callout logins", Unit: "connects/s",
		Baseline: "plain nkey", Goal: MinRatio, Target: 0.50,
		Note: fmt.Sprintf("connect+close, %d at once; the baseline is a key listed in nats.conf", cfg.ConnectWorkers)}
	if st.PlainNkey == nil {
		fig.Skipped = "no plain nkey user in this stack's nats.conf (pass --plain-nkey-seed for an external stack)"
		return []Figure{fig}, nil
	}
	plainPub, err := st.PlainNkey.PublicKey()
	if err != nil {
		return nil, err
	}
	plainOpts := []nats.Option{nats.Nkey(plainPub, st.PlainNkey.Sign), nats.NoReconnect(), nats.Timeout(chat.ConnectTimeout)}
	callout := func(ctx context.Context, w, i int) error {
		u := users[(w+i*cfg.ConnectWorkers)%len(users)]
		nc, err := chat.Connect(ctx, st.NATSURL, u.Identity, nats.NoReconnect())
		if err != nil {
			return err
		}
		nc.Close()
		return nil
	}
	plain := func(ctx context.Context, _, _ int) error {
		nc, err := nats.Connect(st.NATSURL, plainOpts...)
		if err != nil {
			return err
		}
		nc.Close()
		return nil
	}
	var c, p phaseTime
	cpuC, cpuP := make([]time.Duration, 3), make([]time.Duration, 3)
	var names []string
	for range max(1, cfg.Rounds) {
		m := st.cpuMeter()
		n, d, err := loop(ctx, cfg.ConnectWorkers, cfg.Duration, plain)
		if err != nil {
			return nil, fmt.Errorf("plain nkey logins: %w", err)
		}
		p.add(n, d)
		addCPU(cpuP, m.used())
		m = st.cpuMeter()
		if n, d, err = loop(ctx, cfg.ConnectWorkers, cfg.Duration, callout); err != nil {
			return nil, fmt.Errorf("callout logins: %w", err)
		}
		c.add(n, d)
		addCPU(cpuC, m.used())
		names = m.names
	}
	fig.Value, fig.Base = c.rate(), p.rate()
	fig.CPURatio = cpuRatio(cpuP, p.n, cpuC, c.n)
	fig.Note += "; CPU per login, callout vs plain: " + perOp(names, cpuC, c.n) + " vs " + perOp(names, cpuP, p.n)
	return []Figure{fig}, nil
}

func addCPU(sum, d []time.Duration) {
	for i := range min(len(sum), len(d)) {
		sum[i] += d[i]
	}
}

// cpuRatio returns the baseline's CPU per operation over the figure's
// (0 when either is unknown).
func cpuRatio(base []time.Duration, baseN int, fig []time.Duration, figN int) float64 {
	var b, f time.Duration
	for _, d := range base {
		b += d
	}
	for _, d := range fig {
		f += d
	}
	if b <= 0 || f <= 0 || baseN == 0 || figN == 0 {
		return 0
	}
	return (b.Seconds() / float64(baseN)) / (f.Seconds() / float64(figN))
}

// perOp formats the CPU each process used per operation.
func perOp(names []string, cpu []time.Duration, n int) string {
	if n == 0 {
		return "-"
	}
	var parts []string
	for i, name := range names {
		parts = append(parts, fmt.Sprintf("%s %.0f µs", name, float64(cpu[i].Microseconds())/float64(n)))
	}
	return strings.Join(parts, ", ")
}

// loop runs fn from workers goroutines until d has passed and returns how
// many calls completed and the time they took.
func loop(ctx context.Context, workers int, d time.Duration, fn func(ctx context.Context, worker, i int) error) (int, time.Duration, error) {
	var n atomic.Int64
	var wg sync.WaitGroup
	var ferr atomic.Value
	start := time.Now()
	deadline := start.Add(d)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline) && ctx.Err() == nil; i++ {
				if err := fn(ctx, w, i); err != nil {
					ferr.Store(err)
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	if err, _ := ferr.Load().(error); err != nil {
		return 0, 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	if n.Load() == 0 {
		return 0, 0, errors.New("nothing completed")
	}
	return int(n.Load()), time.Since(start), nil
}

// PlainNkeyFromSeed returns the key pair of a user seed ("SU…"), for an
// external stack whose nats.conf lists that user.
func PlainNkeyFromSeed(seed string) (nkeys.KeyPair, error) {
	kp, err := nkeys.FromSeed([]byte(seed))
	if err != nil {
		return nil, fmt.Errorf("bench: the plain nkey seed: %w", err)
	}
	if pub, _ := kp.PublicKey(); !nkeys.IsValidPublicUserKey(pub) {
		return nil, errors.New("bench: the plain nkey seed is not a user seed (SU…)")
	}
	return kp, nil
}
