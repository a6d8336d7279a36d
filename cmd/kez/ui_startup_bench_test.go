package main

import (
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/internal/testenv/ptytest"
	"github.com/kez-lat/kez-chat/internal/testenv/uifixture"
)

// The size of the startup figure's home (issue 20's figures).
const (
	uiBenchConversations = 1000
	uiBenchMessages      = 100_000
)

// BenchmarkUIStartup runs "kez ui" on a home of 1,000 conversations and
// 100,000 messages and times exec to the newest conversation's handle on
// screen (ms/op, the median), with the process's peak RSS at that moment
// (VmHWM-MiB). Baselines in the same loop: "kez version" exec to exit,
// and chat.ReadConversations in-process on the same home. Each iteration
// quits the UI with q and waits for it to exit.
func BenchmarkUIStartup(b *testing.B) {
	if err := ptytest.Available(); err != nil {
		b.Skipf("no pseudo-terminal: %v", err)
	}
	bin := builtKez(b)
	home := filepath.Join(b.TempDir(), "kez-home")
	fx, err := uifixture.Write(home, uifixture.Options{Contacts: uiBenchConversations, Messages: uiBenchMessages})
	if err != nil {
		b.Fatal(err)
	}
	newest := " " + fx.Handles[0] // a list row: the handle after a space
	// The fixture's user is registered nowhere: the UI runs offline, its
	// NATS a loopback port where nothing listens (connections refused at
	// once), which is what the first frame must not wait for anyway.
	env := uiEnv(b, map[string]string{"KEZ_HOME": home, "NATS_URL": "nats://" + closedPort(b)})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var startup, hwm, version, readConv []float64
	for b.Loop() {
		tm := startPtyUI(b, bin, env)
		wctx, wcancel := context.WithTimeout(ctx, uiBenchWait)
		at, err := tm.WaitScreen(wctx, func(s ptytest.Screen) bool { return s.Contains(newest) })
		if err != nil {
			b.Fatalf("no %q on screen: %v; screen:\n%s", newest, err, tm.ScreenText())
		}
		mib, err := vmHWM(tm.Pid())
		if err != nil {
			b.Fatal(err)
		}
		startup = append(startup, ms(at.Sub(tm.Started())))
		hwm = append(hwm, mib)
		quitPtyUI(b, wctx, tm, "q")
		wcancel()

		t0 := time.Now()
		if out, err := exec.Command(bin, "version").CombinedOutput(); err != nil {
			b.Fatalf("kez version: %v\n%s", err, out)
		}
		version = append(version, ms(time.Since(t0)))

		t0 = time.Now()
		convs, err := chat.ReadConversations(ctx, home)
		if err != nil {
			b.Fatal(err)
		}
		readConv = append(readConv, ms(time.Since(t0)))
		if len(convs) < uiBenchConversations {
			b.Fatalf("ReadConversations read %d conversations, want %d", len(convs), uiBenchConversations)
		}
	}
	b.ReportMetric(0, "ns/op") // an iteration also quits the UI and runs the baselines
	b.ReportMetric(median(startup), "ms/op")
	b.ReportMetric(median(hwm), "VmHWM-MiB")
	b.ReportMetric(median(version), "version-ms/op")
	b.ReportMetric(median(readConv), "ReadConversations-ms/op")
}

// closedPort returns a loopback address where nothing listens.
func closedPort(tb testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
