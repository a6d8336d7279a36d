package main

import (
	"bytes"
	"context"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kez-lat/kez-chat/kez"
)

// The CLI runs in-process through run(ctx, e, args) with buffers for its
// streams and a map for its environment, so tests need no binary and no
// terminal.

func TestMain(m *testing.M) {
	scryptWorkFactor = 10 // keep the passphrase tests fast
	code := m.Run()
	if kezBin != "" { // built by the terminal tests
		os.RemoveAll(filepath.Dir(kezBin))
	}
	os.Exit(code)
}

// result is what one CLI run printed and returned.
type result struct {
	stdout, stderr string
	code           int
}

// kezCmd runs one command line with the given environment and stdin.
func kezCmd(t *testing.T, environ map[string]string, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	e := &env{
		stdin:  strings.NewReader(stdin),
		stdout: &out,
		stderr: &errb,
		getenv: func(k string) string { return environ[k] },
	}
	code := run(context.Background(), e, args)
	return result{out.String(), errb.String(), code}
}

// mustRun runs and fails the test unless the exit status is 0.
func mustRun(t *testing.T, environ map[string]string, stdin string, args ...string) result {
	t.Helper()
	r := kezCmd(t, environ, stdin, args...)
	if r.code != 0 {
		t.Fatalf("kez %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

// fixedRand makes randSource a fixed stream for the test and returns a twin
// stream, so the test can compute the words and recall positions init will
// use.
func fixedRand(t *testing.T, seed byte) *mrand.ChaCha8 {
	t.Helper()
	old := randSource
	randSource = mrand.NewChaCha8([32]byte{seed})
	t.Cleanup(func() { randSource = old })
	return mrand.NewChaCha8([32]byte{seed})
}

// plannedInit is what init will do with a fixed random stream: the words,
// then the recall positions (0-based) of each round.
type plannedInit struct {
	words []string
	r     *mrand.Rand
}

func planInit(t *testing.T, twin *mrand.ChaCha8) *plannedInit {
	t.Helper()
	entropy := make([]byte, 32)
	twin.Read(entropy)
	m, err := kez.MnemonicFromEntropy(entropy)
	if err != nil {
		t.Fatal(err)
	}
	var seed [32]byte
	twin.Read(seed[:])
	return &plannedInit{words: m.Words(), r: mrand.New(mrand.NewChaCha8(seed))}
}

// nextRound returns the positions of the next recall round.
func (p *plannedInit) nextRound() []int {
	pos := p.r.Perm(len(p.words))[:3]
	slices.Sort(pos)
	return pos
}

func (p *plannedInit) answers(pos []int) string {
	var b strings.Builder
	for _, i := range pos {
		b.WriteString(p.words[i] + "\n")
	}
	return b.String()
}

func TestHelpEveryCommand(t *testing.T) {
	r := mustRun(t, nil, "", "help")
	for name, c := range commands {
		if !strings.Contains(r.stdout, name) || !strings.Contains(r.stdout, c.summary) {
			t.Errorf("kez help does not list %s", name)
		}
		for _, args := range [][]string{{"help", name}, {name, "--help"}, {name, "-h"}} {
			h := mustRun(t, nil, "", args...)
			if !strings.HasPrefix(h.stdout, "usage: kez "+name) || len(strings.TrimSpace(c.help)) < 40 {
				t.Errorf("kez %s: help is missing or thin:\n%s", strings.Join(args, " "), h.stdout)
			}
		}
	}
	for _, name := range []string{"init", "recover", "id"} {
		if commands[name] == nil {
			t.Errorf("command %s is not registered", name)
		}
	}
	if r := kezCmd(t, nil, "", "help", "nope"); r.code != 2 || !strings.Contains(r.stderr, "kez help") {
		t.Errorf("help for an unknown command: %+v", r)
	}
	if r := kezCmd(t, nil, "", "id", "--bogus"); r.code != 2 || !strings.Contains(r.stderr, "usage: kez id") {
		t.Errorf("unknown flag: %+v", r)
	}
}

// /dev/null is a character device but no terminal: a script that runs
// "kez init --yes </dev/null >/dev/null" must not be asked for a passphrase.
func TestIsTerminalNotForDevNullFileOrPipe(t *testing.T) {
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	if isTerminal(devnull) {
		t.Errorf("%s counts as a terminal", os.DevNull)
	}
	f, err := os.Create(t.TempDir() + "/plain")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if isTerminal(f) {
		t.Error("a plain file counts as a terminal")
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if isTerminal(r) || isTerminal(w) {
		t.Error("a pipe counts as a terminal")
	}
}
