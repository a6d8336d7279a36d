package servercmd

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func envOf(m map[string]string) Env { return func(k string) string { return m[k] } }

func TestReport(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code int
		out  string
	}{
		{nil, 0, ""},
		{errors.New("the database is gone"), 1, "kez-x: the database is gone\n"},
		{Usagef("--nats is required"), 2, "kez-x: --nats is required\n"},
		{fmt.Errorf("starting: %w", Usagef("--store %q: want sqlite", "etcd")), 2, "kez-x: starting: --store \"etcd\": want sqlite\n"},
	} {
		var b bytes.Buffer
		if code := Report(&b, "kez-x", tc.err); code != tc.code || b.String() != tc.out {
			t.Errorf("Report(%v) = %d, %q; want %d, %q", tc.err, code, b.String(), tc.code, tc.out)
		}
	}
}

func TestEnv(t *testing.T) {
	env := envOf(map[string]string{"A": "a", "N": "3", "BAD": "three"})
	if env.Or("A", "d") != "a" || env.Or("UNSET", "d") != "d" {
		t.Error("Env.Or")
	}
	parse := func(args ...string) (*int, error) {
		fs := NewFlagSet("x", "usage: x", &bytes.Buffer{})
		n := fs.Int("n", 1, "")
		if ok, err := Parse(fs, args, "see --help"); !ok {
			t.Fatalf("Parse(%q): %v", args, err)
		}
		err := env.Int(fs, "n", "N", n)
		return n, err
	}
	if n, err := parse(); err != nil || *n != 3 {
		t.Errorf("the environment twin: %d, %v", *n, err)
	}
	if n, err := parse("-n", "5"); err != nil || *n != 5 {
		t.Errorf("the flag must win: %d, %v", *n, err)
	}
	fs := NewFlagSet("x", "usage: x", &bytes.Buffer{})
	n := fs.Int("n", 1, "")
	if err := env.Int(fs, "n", "BAD", n); !errors.As(err, new(UsageError)) || !strings.Contains(err.Error(), `BAD "three"`) || *n != 1 {
		t.Errorf("a twin that is not a number: %v, %d", err, *n)
	}
}

func TestParse(t *testing.T) {
	var stderr bytes.Buffer
	fs := NewFlagSet("kez-x", "usage: kez-x [flags]", &stderr)
	fs.String("listen", "127.0.0.1:1", "address to listen on")
	if ok, err := Parse(fs, []string{"--help"}, "see --help"); ok || err != nil {
		t.Errorf("--help: %v, %v", ok, err)
	}
	if !strings.HasPrefix(stderr.String(), "usage: kez-x [flags]\n\nflags:\n") || !strings.Contains(stderr.String(), "address to listen on") {
		t.Errorf("--help printed %q", stderr.String())
	}
	for _, args := range [][]string{{"--nope"}, {"extra"}} {
		ok, err := Parse(NewFlagSet("kez-x", "usage", &bytes.Buffer{}), args, "the only subcommand is y")
		if ok || !errors.As(err, new(UsageError)) {
			t.Errorf("%q: %v, %v", args, ok, err)
		}
	}
	_, err := Parse(NewFlagSet("kez-x", "usage", &bytes.Buffer{}), []string{"extra"}, "the only subcommand is y")
	if err == nil || err.Error() != `unexpected arguments ["extra"]; the only subcommand is y` {
		t.Errorf("arguments after the flags: %v", err)
	}
}

func TestLogFlags(t *testing.T) {
	logOf := func(env map[string]string, args ...string) (string, error) {
		fs := NewFlagSet("x", "usage", &bytes.Buffer{})
		var lf LogFlags
		lf.Declare(fs, envOf(env), "KEZ_X")
		if ok, err := Parse(fs, args, ""); !ok {
			t.Fatal(err)
		}
		var b bytes.Buffer
		log, err := lf.Logger(&b)
		if err != nil {
			return "", err
		}
		log.Debug("quiet")
		log.Info("hello")
		return b.String(), nil
	}
	if out, err := logOf(nil); err != nil || !strings.Contains(out, "msg=hello") || strings.Contains(out, "quiet") {
		t.Errorf("defaults (text, info): %q, %v", out, err)
	}
	if out, err := logOf(map[string]string{"KEZ_X_LOG_FORMAT": "json", "KEZ_X_LOG_LEVEL": "debug"}); err != nil || !strings.Contains(out, `"msg":"quiet"`) {
		t.Errorf("from the environment (json, debug): %q, %v", out, err)
	}
	if out, err := logOf(map[string]string{"KEZ_X_LOG_FORMAT": "json"}, "--log-format", "text"); err != nil || !strings.Contains(out, "msg=hello") {
		t.Errorf("the flag must win: %q, %v", out, err)
	}
	for _, args := range [][]string{{"--log-format", "xml"}, {"--log-level", "loud"}} {
		if _, err := logOf(nil, args...); !errors.As(err, new(UsageError)) || !strings.Contains(err.Error(), args[0]) {
			t.Errorf("%q: %v", args, err)
		}
	}
}

func TestNewRegistry(t *testing.T) {
	mfs, err := NewRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	if !names["go_goroutines"] {
		t.Errorf("no Go runtime metrics in %v", names)
	}
}
