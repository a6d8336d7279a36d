package servercmd

import (
	"errors"
	"flag"
	"math"
	"strconv"
	"strings"
)

// errBytes reports a byte count [ParseBytes] refuses.
var errBytes = errors.New("want a whole number of bytes, with k, M, G or T for 1024, 1024², … (e.g. 4G or 512k)")

// ParseBytes reads a byte count: a whole number, optionally followed by
// k, M, G or T (binary multiples: 1k is 1024) and an optional B or iB,
// e.g. "4G", "512KiB", "1048576".
func ParseBytes(s string) (int64, error) {
	t, binary := strings.CutSuffix(s, "iB")
	if !binary {
		t = strings.TrimSuffix(t, "B")
	}
	mult := int64(1)
	if t != "" {
		switch t[len(t)-1] {
		case 'k', 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
	}
	if mult > 1 {
		t = t[:len(t)-1]
	} else if binary {
		return 0, errBytes
	}
	if t == "" || t[0] < '0' || t[0] > '9' {
		return 0, errBytes
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return 0, errBytes
	}
	return n * mult, nil
}

// bytesValue is a flag.Value of a byte count.
type bytesValue struct{ v *int64 }

func (b bytesValue) String() string {
	if b.v == nil {
		return ""
	}
	return strconv.FormatInt(*b.v, 10)
}

func (b bytesValue) Set(s string) error {
	n, err := ParseBytes(s)
	if err != nil {
		return err
	}
	*b.v = n
	return nil
}

// BytesVar declares a byte-count flag ([ParseBytes]) with default def.
func BytesVar(fs *flag.FlagSet, p *int64, name string, def int64, usage string) {
	*p = def
	fs.Var(bytesValue{p}, name, usage)
}

// Bytes is [Env.Int] for a byte-count flag ([ParseBytes]).
func (e Env) Bytes(fs *flag.FlagSet, flagName, name string, v *int64) error {
	return envValue(e, fs, flagName, name, v, ParseBytes, "a number of bytes such as 4G or 512k")
}
