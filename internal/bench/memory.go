package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/nats-io/nats.go"
)

// MemoryTarget is the most the chat-server may hold at 1,000 users.
const MemoryTarget = 64 // MiB

// measureMemory registers cfg.Users users through the APIs, logs them all
// in through the callout and, while they stay connected, reads the
// chat-server's resident memory. idle is its RSS right after it started.
func measureMemory(ctx context.Context, st *Stack, cfg Config, idle float64) ([]Figure, error) {
	fig := Figure{Group: "memory", Name: fmt.Sprintf("chat-server RSS, %d users connected", cfg.Users), Unit: "MiB",
		Baseline: "idle after start", Base: idle, Goal: MaxValue, Target: MemoryTarget}
	if st.ChatServerPID == 0 {
		fig.Skipped = "the chat-server's process is not known (pass --chat-server-pid for an external stack)"
		return []Figure{fig}, nil
	}
	start := time.Now()
	users, err := st.Register(ctx, "kbu", cfg.Users, cfg.ConnectWorkers)
	if err != nil {
		return nil, err
	}
	registered := time.Since(start)
	conns := make([]*nats.Conn, len(users))
	defer func() {
		for _, nc := range conns {
			if nc != nil {
				nc.Close()
			}
		}
	}()
	var next atomic.Int64
	var wg sync.WaitGroup
	var cerr atomic.Value
	start = time.Now()
	for range cfg.ConnectWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(users) {
					return
				}
				nc, err := chat.Connect(ctx, st.NATSURL, users[i].Identity, nats.NoReconnect())
				if err != nil {
					cerr.Store(err)
					return
				}
				conns[i] = nc
			}
		}()
	}
	wg.Wait()
	if err, _ := cerr.Load().(error); err != nil {
		return nil, fmt.Errorf("logging in the users: %w", err)
	}
	connected := time.Since(start)
	rss, hwm, err := ProcessMemory(st.ChatServerPID)
	if err != nil {
		return nil, err
	}
	fig.Value = rss
	fig.Note = fmt.Sprintf("VmRSS of the kez-chat-server process; peak (VmHWM) %.1f MiB; %d users registered through the HTTP APIs in %.1f s, logged in through the callout in %.1f s",
		hwm, cfg.Users, registered.Seconds(), connected.Seconds())
	return []Figure{fig}, nil
}

// ProcessMemory returns a process's resident set (VmRSS) and its peak
// (VmHWM) in MiB, from /proc/PID/status.
func ProcessMemory(pid int) (rss, hwm float64, err error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, fmt.Errorf("bench: reading the memory of process %d: %w", pid, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, 0, fmt.Errorf("bench: unexpected %s line in /proc/%d/status: %q", k, pid, v)
		}
		kb, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return 0, 0, err
		}
		if k == "VmRSS" {
			rss = kb / 1024
		} else {
			hwm = kb / 1024
		}
	}
	if rss == 0 {
		return 0, 0, errors.New("bench: no VmRSS in /proc/" + strconv.Itoa(pid) + "/status")
	}
	return rss, hwm, sc.Err()
}
