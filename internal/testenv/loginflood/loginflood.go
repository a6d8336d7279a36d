// Package loginflood floods a NATS server with bogus logins and measures
// real logins meanwhile: the load of issue 13's "login flood" finding, for
// the callout tests, the system tests and kez-bench.
//
// The flood speaks the NATS client protocol by hand over raw TCP instead
// of using nats.go, so that the machine's cores go to the servers under
// test: each attempt dials, reads INFO and its nonce, sends CONNECT with an
// nkey and a signature (a valid one by a key nobody registered, or random
// bytes) and PING, and reads the answer: "-ERR" (denied) or "PONG" (let
// in, which must never happen).
//
//	res, err := loginflood.Run(ctx, loginflood.Config{Addr: "127.0.0.1:4222", Rate: 1000, Conns: 64, Duration: 10 * time.Second})
//
// [Measure] makes real logins one after another and reports how many
// succeeded within a bound and their latency.
package loginflood

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/nkeys"
)

// Kind is what a bogus login claims.
type Kind int

// Kinds of bogus logins.
const (
	// UnknownKey: a key nobody registered, with a valid signature of the
	// server's nonce.
	UnknownKey Kind = iota
	// BadSignature: a key nobody registered, with 64 random bytes as the
	// signature.
	BadSignature
	// ForgedKey: Config.Victim's (registered) key, with 64 random bytes
	// as the signature.
	ForgedKey
)

func (k Kind) String() string {
	switch k {
	case UnknownKey:
		return "unknown key"
	case BadSignature:
		return "bad signature"
	case ForgedKey:
		return "forged key"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Config shapes a flood.
type Config struct {
	// Addr is the NATS server's host:port. Required.
	Addr string
	// Rate is the offered load: attempts per second, all connections
	// together. Required.
	Rate float64
	// Conns is how many attempts run at once (each one connection: log
	// in, wait for the answer, close). Default 64. An attempt that waits
	// long for its answer holds its connection, so the achieved rate is
	// at most Conns over the time an answer takes.
	Conns int
	// Duration is how long the flood offers load. Required.
	Duration time.Duration
	// Kinds are cycled attempt by attempt; default {UnknownKey,
	// BadSignature}.
	Kinds []Kind
	// Victim is the key a ForgedKey attempt claims.
	Victim kez.PublicKey
	// Keys is how many unregistered keys are made up front and cycled
	// through; default 1024.
	Keys int
	// Sources are local addresses to dial from, attempt by attempt in
	// turn (on Linux every 127.0.0.0/8 address reaches a server on
	// 127.0.0.1), so that the flood comes from addresses other than the
	// measured user's. Empty: the system chooses.
	Sources []netip.Addr
	// Timeout bounds one attempt; default 5 s.
	Timeout time.Duration
	// Seed makes the random signatures repeatable.
	Seed uint64
}

// Result is what a flood did.
type Result struct {
	Offered  int           // attempts the schedule asked for
	Attempts int           // attempts made
	Denied   int           // answered "-ERR": refused
	Accepted int           // answered "PONG": a bogus login was let in
	Failed   int           // no answer: connection errors, timeouts
	Elapsed  time.Duration // from the first attempt to the last answer
	// Denial latency: from sending CONNECT to reading the refusal.
	DenyP50, DenyP99, DenyMax time.Duration
	// FirstError is the first failure's text, for the logs.
	FirstError string
}

// Rate returns the achieved attempts per second.
func (r Result) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Attempts) / r.Elapsed.Seconds()
}

// String summarises the result in one line.
func (r Result) String() string {
	return fmt.Sprintf("%d offered, %d made (%.0f/s), %d denied, %d let in, %d failed; denial p50 %s p99 %s max %s",
		r.Offered, r.Attempts, r.Rate(), r.Denied, r.Accepted, r.Failed,
		r.DenyP50.Round(time.Millisecond), r.DenyP99.Round(time.Millisecond), r.DenyMax.Round(time.Millisecond))
}

type fakeKey struct {
	pub  string
	priv ed25519.PrivateKey
}

// maxLag is how far behind its schedule a connection slot may fall before
// it gives up the times it missed.
const maxLag = time.Second

// Run floods cfg.Addr for cfg.Duration (or until ctx ends) and returns
// what happened. Connection slot w makes its attempts at the times
// w/Rate, (w+Conns)/Rate, …; a slot still busy at its next time starts
// the next attempt as soon as it is free, and skips the times more than a
// second past (Offered counts them, Attempts does not).
func Run(ctx context.Context, cfg Config) (Result, error) {
	if cfg.Addr == "" || cfg.Rate <= 0 || cfg.Duration <= 0 {
		return Result{}, errors.New("loginflood: Addr, Rate and Duration are required")
	}
	if cfg.Conns <= 0 {
		cfg.Conns = 64
	}
	if len(cfg.Kinds) == 0 {
		cfg.Kinds = []Kind{UnknownKey, BadSignature}
	}
	if slices.Contains(cfg.Kinds, ForgedKey) && cfg.Victim.IsZero() {
		return Result{}, errors.New("loginflood: ForgedKey needs a Victim")
	}
	if cfg.Keys <= 0 {
		cfg.Keys = 1024
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	keys := make([]fakeKey, cfg.Keys)
	for i := range keys {
		pub, priv, err := ed25519.GenerateKey(nil)
		if err != nil {
			return Result{}, err
		}
		enc, err := nkeys.Encode(nkeys.PrefixByteUser, pub)
		if err != nil {
			return Result{}, err
		}
		keys[i] = fakeKey{string(enc), priv}
	}

	type slot struct {
		offered, attempts, denied, accepted, failed int
		lat                                         []time.Duration
		firstErr                                    string
	}
	slots := make([]slot, cfg.Conns)
	period := time.Duration(float64(time.Second) * float64(cfg.Conns) / cfg.Rate)
	start := time.Now()
	end := start.Add(cfg.Duration)
	var wg sync.WaitGroup
	for w := range cfg.Conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sl := &slots[w]
			rng := rand.New(rand.NewPCG(cfg.Seed, uint64(w)))
			timer := time.NewTimer(0)
			defer timer.Stop()
			next := start.Add(time.Duration(float64(time.Second) * float64(w) / cfg.Rate))
			for i := 0; next.Before(end); i++ {
				if d := time.Until(next); d > 0 {
					timer.Reset(d)
					select {
					case <-ctx.Done():
						return
					case <-timer.C:
					}
				} else if ctx.Err() != nil {
					return
				}
				sl.offered++
				n := w + i*cfg.Conns // the attempt's number in the schedule
				var dialer net.Dialer
				if len(cfg.Sources) > 0 {
					dialer.LocalAddr = &net.TCPAddr{IP: cfg.Sources[n%len(cfg.Sources)].AsSlice()}
				}
				lat, answer, err := attempt(ctx, &dialer, cfg, cfg.Kinds[n%len(cfg.Kinds)], keys[n%len(keys)], rng)
				sl.attempts++
				switch {
				case err != nil:
					sl.failed++
					if sl.firstErr == "" {
						sl.firstErr = err.Error()
					}
				case answer == "PONG":
					sl.accepted++
				default:
					sl.denied++
					sl.lat = append(sl.lat, lat)
				}
				// The next time of this slot. A slot that fell behind catches
				// up, attempt after attempt, but gives up the times more than
				// maxLag past.
				next = next.Add(period)
				for late := time.Now().Add(-maxLag); next.Before(late) && next.Before(end); next = next.Add(period) {
					sl.offered++
				}
			}
		}()
	}
	wg.Wait()
	res := Result{Elapsed: time.Since(start)}
	var lat []time.Duration
	for _, sl := range slots {
		res.Offered += sl.offered
		res.Attempts += sl.attempts
		res.Denied += sl.denied
		res.Accepted += sl.accepted
		res.Failed += sl.failed
		lat = append(lat, sl.lat...)
		if res.FirstError == "" {
			res.FirstError = sl.firstErr
		}
	}
	res.DenyP50, res.DenyP99, res.DenyMax = Percentiles(lat)
	return res, ctx.Err()
}

// RunDuring floods as [Run] does and runs during, at the same time (for
// instance a [Measure] of real logins); it returns once both are done.
func RunDuring(ctx context.Context, cfg Config, during func()) (Result, error) {
	var (
		wg  sync.WaitGroup
		res Result
		err error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		res, err = Run(ctx, cfg)
	}()
	during()
	wg.Wait()
	return res, err
}

// Once makes one bogus login of the given kind against cfg.Addr, from
// source (the zero Addr: the system's choice), with a fresh key, and
// returns how long the answer took after CONNECT and the answer ("PONG"
// or the "-ERR …" line). Of cfg it uses Addr, Victim, Timeout and Seed.
func Once(ctx context.Context, cfg Config, source netip.Addr, kind Kind) (time.Duration, string, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		return 0, "", err
	}
	enc, err := nkeys.Encode(nkeys.PrefixByteUser, pub)
	if err != nil {
		return 0, "", err
	}
	var dialer net.Dialer
	if source.IsValid() {
		dialer.LocalAddr = &net.TCPAddr{IP: source.AsSlice()}
	}
	return attempt(ctx, &dialer, cfg, kind, fakeKey{string(enc), priv}, rand.New(rand.NewPCG(cfg.Seed, 0)))
}

// attempt makes one bogus login and returns the time from CONNECT to the
// server's answer and the answer ("PONG" or the "-ERR …" line).
func attempt(ctx context.Context, dialer *net.Dialer, cfg Config, kind Kind, key fakeKey, rng *rand.Rand) (time.Duration, string, error) {
	dctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	conn, err := dialer.DialContext(dctx, "tcp", cfg.Addr)
	if err != nil {
		return 0, "", err
	}
	defer conn.Close()
	deadline, _ := dctx.Deadline()
	_ = conn.SetDeadline(deadline)
	br := bufio.NewReaderSize(conn, 4096)
	line, err := br.ReadString('\n')
	if err != nil {
		return 0, "", fmt.Errorf("reading INFO: %w", err)
	}
	nonce, err := infoNonce(line)
	if err != nil {
		return 0, "", err
	}
	nkey := key.pub
	var sig []byte
	switch kind {
	case UnknownKey:
		sig = ed25519.Sign(key.priv, []byte(nonce))
	case ForgedKey:
		nkey = cfg.Victim.String()
		fallthrough
	default:
		sig = make([]byte, ed25519.SignatureSize)
		for i := range sig {
			sig[i] = byte(rng.Uint32())
		}
	}
	msg := `CONNECT {"verbose":false,"pedantic":false,"protocol":1,"lang":"go","version":"loginflood","headers":true,"no_responders":true,"nkey":"` +
		nkey + `","sig":"` + base64.RawURLEncoding.EncodeToString(sig) + "\"}\r\nPING\r\n"
	sent := time.Now()
	if _, err := conn.Write([]byte(msg)); err != nil {
		return 0, "", fmt.Errorf("sending CONNECT: %w", err)
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return 0, "", fmt.Errorf("waiting for the answer: %w", err)
		}
		line = strings.TrimSpace(line)
		if line == "PONG" || strings.HasPrefix(line, "-ERR") {
			return time.Since(sent), line, nil
		}
	}
}

// infoNonce returns the nonce of the server's INFO line. It looks for the
// field instead of decoding the JSON: the flood must cost its machine
// little. (nats-server's nonces are base64 raw-URL, with no escapes.)
func infoNonce(line string) (string, error) {
	info, ok := strings.CutPrefix(line, "INFO ")
	if !ok {
		return "", fmt.Errorf("not an INFO line: %.80q", line)
	}
	_, rest, ok := strings.Cut(info, `"nonce":"`)
	nonce, _, closed := strings.Cut(rest, `"`)
	if !ok || !closed || nonce == "" {
		return "", fmt.Errorf("INFO without a nonce: %.200q", info)
	}
	return nonce, nil
}

// LoopbackSources returns n loopback addresses from 127.0.0.2 on, for
// [Config.Sources]: addresses other than a measured client's 127.0.0.1.
func LoopbackSources(n int) []netip.Addr {
	out := make([]netip.Addr, 0, n)
	a := netip.MustParseAddr("127.0.0.2")
	for range n {
		out = append(out, a)
		a = a.Next()
	}
	return out
}

// Stats describe real logins measured with [Measure].
type Stats struct {
	N      int           // logins tried
	OK     int           // succeeded within the bound
	Late   int           // succeeded, but after the bound
	Failed int           // refused or failed
	Within time.Duration // the bound
	// Latency of the logins that succeeded.
	P50, P99, Max time.Duration
	// FirstError is the first failure's text.
	FirstError string
}

// Ratio returns the share of logins that succeeded within the bound.
func (s Stats) Ratio() float64 {
	if s.N == 0 {
		return 0
	}
	return float64(s.OK) / float64(s.N)
}

// String summarises the stats in one line.
func (s Stats) String() string {
	return fmt.Sprintf("%d/%d logins within %s (%.1f%%), %d late, %d failed; p50 %s p99 %s max %s",
		s.OK, s.N, s.Within, 100*s.Ratio(), s.Late, s.Failed,
		s.P50.Round(100*time.Microsecond), s.P99.Round(100*time.Microsecond), s.Max.Round(100*time.Microsecond))
}

// Measure makes n logins one after another, starting one every interval
// (or as soon as the previous ends, if it took longer), and reports how
// many succeeded within the bound within. login makes one login and
// closes it; its context ends after 2×within, so a stuck login counts as
// failed. Measure stops early when ctx ends.
func Measure(ctx context.Context, n int, interval, within time.Duration, login func(context.Context) error) Stats {
	st := Stats{Within: within}
	var lat []time.Duration
	t := time.NewTimer(0)
	defer t.Stop()
	next := time.Now()
	for range n {
		if d := time.Until(next); d > 0 {
			t.Reset(d)
			select {
			case <-ctx.Done():
				return st.finish(lat)
			case <-t.C:
			}
		}
		if ctx.Err() != nil {
			break
		}
		next = next.Add(interval)
		lctx, cancel := context.WithTimeout(ctx, 2*within)
		start := time.Now()
		err := login(lctx)
		d := time.Since(start)
		cancel()
		st.N++
		switch {
		case err != nil:
			st.Failed++
			if st.FirstError == "" {
				st.FirstError = err.Error()
			}
		case d > within:
			st.Late++
			lat = append(lat, d)
		default:
			st.OK++
			lat = append(lat, d)
		}
	}
	return st.finish(lat)
}

func (s Stats) finish(lat []time.Duration) Stats {
	s.P50, s.P99, s.Max = Percentiles(lat)
	return s
}

// Percentiles returns the 50th and 99th percentiles and the maximum of d
// (zeros for none). It sorts d.
func Percentiles(d []time.Duration) (p50, p99, maxd time.Duration) {
	if len(d) == 0 {
		return 0, 0, 0
	}
	slices.Sort(d)
	at := func(p float64) time.Duration {
		i := int(p*float64(len(d))+0.5) - 1
		return d[min(max(i, 0), len(d)-1)]
	}
	return at(0.50), at(0.99), d[len(d)-1]
}
