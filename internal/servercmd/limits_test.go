package servercmd

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/ratelimit"
)

func TestLimitAndDurationFlags(t *testing.T) {
	env := envOf(map[string]string{"L": "5/1m", "D": "90m", "BADL": "fast", "BADD": "soon", "P": "10.0.0.1, fd00::/8"})
	parse := func(args ...string) (ratelimit.Limit, time.Duration, error) {
		fs := NewFlagSet("x", "usage: x", &bytes.Buffer{})
		var l ratelimit.Limit
		LimitVar(fs, &l, "l", ratelimit.Limit{N: 10, Per: time.Hour}, "")
		d := fs.Duration("d", time.Hour, "")
		if ok, err := Parse(fs, args, "see --help"); !ok {
			return l, *d, err
		}
		if err := env.Limit(fs, "l", "L", &l); err != nil {
			return l, *d, err
		}
		return l, *d, env.Duration(fs, "d", "D", d)
	}
	if l, d, err := parse(); err != nil || l != (ratelimit.Limit{N: 5, Per: time.Minute}) || d != 90*time.Minute {
		t.Errorf("the environment twins: %v %v %v", l, d, err)
	}
	if l, d, err := parse("-l", "off", "-d", "2h"); err != nil || !l.Off() || d != 2*time.Hour {
		t.Errorf("the flags must win: %v %v %v", l, d, err)
	}
	if _, _, err := parse("-l", "ten"); !errors.As(err, new(UsageError)) {
		t.Errorf("a bad flag: %v", err)
	}
	fs := NewFlagSet("x", "usage: x", &bytes.Buffer{})
	var l ratelimit.Limit
	LimitVar(fs, &l, "l", ratelimit.Limit{N: 10, Per: time.Hour}, "")
	d := fs.Duration("d", time.Hour, "")
	if err := env.Limit(fs, "l", "BADL", &l); !errors.As(err, new(UsageError)) || !strings.Contains(err.Error(), "BADL") || l.N != 10 {
		t.Errorf("a bad limit twin: %v %v", err, l)
	}
	if err := env.Duration(fs, "d", "BADD", d); !errors.As(err, new(UsageError)) || !strings.Contains(err.Error(), "BADD") {
		t.Errorf("a bad duration twin: %v", err)
	}
	var help bytes.Buffer
	fs = NewFlagSet("x", "usage: x", &help)
	LimitVar(fs, &l, "claims", ratelimit.Limit{N: 10, Per: time.Hour}, "claims per address")
	Parse(fs, []string{"--help"}, "")
	if !strings.Contains(help.String(), "(default 10/1h)") {
		t.Errorf("help: %s", help.String())
	}
}

func TestClientIPFlags(t *testing.T) {
	fs := NewFlagSet("x", "usage: x", &bytes.Buffer{})
	var c ClientIPFlags
	c.Declare(fs, envOf(map[string]string{"KEZ_X_TRUSTED_PROXIES": "10.0.0.1, fd00::/8", "KEZ_X_LIMIT_MAX_KEYS": "7"}), "KEZ_X")
	if ok, err := Parse(fs, nil, ""); !ok {
		t.Fatal(err)
	}
	ip, n, err := c.Parse(fs)
	if err != nil || n != 7 || len(ip.TrustedProxies) != 2 || ProxiesString(ip.TrustedProxies) != "[10.0.0.1/32 fd00::/8]" || ProxiesString(nil) != "none" {
		t.Fatalf("%v %d %v", ip, n, err)
	}
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "1048576": 1 << 20, "512k": 512 << 10, "512K": 512 << 10, "4G": 4 << 30, "4GiB": 4 << 30,
		"4GB": 4 << 30, "1T": 1 << 40, "10B": 10, "8M": 8 << 20,
	} {
		if got, err := ParseBytes(in); err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "k", "-1", "+1", " 1", "1.5G", "1x", "1iB", "4g", "9223372036854775807k", "99999999999999999999", "1 G", "0x10"} {
		if got, err := ParseBytes(in); err == nil {
			t.Errorf("ParseBytes(%q) = %d, want an error", in, got)
		}
	}
	fs := NewFlagSet("x", "usage: x", &bytes.Buffer{})
	var n int64
	BytesVar(fs, &n, "n", 4<<30, "")
	if ok, err := Parse(fs, nil, ""); !ok || err != nil {
		t.Fatal(err)
	}
	if err := envOf(map[string]string{"N": "2M"}).Bytes(fs, "n", "N", &n); err != nil || n != 2<<20 {
		t.Errorf("the twin: %d %v", n, err)
	}
	if err := envOf(map[string]string{"N": "lots"}).Bytes(fs, "n", "N", &n); !errors.As(err, new(UsageError)) {
		t.Errorf("a bad twin: %v", err)
	}
	if err := fs.Set("n", "3k"); err != nil || n != 3<<10 {
		t.Errorf("the flag: %d %v", n, err)
	}
}
