package loginflood

import (
	"strings"
	"testing"
	"time"
)

func TestInfoNonce(t *testing.T) {
	for line, want := range map[string]string{
		`INFO {"server_id":"N","nonce":"kT9_Ozx3bQc","headers":true}` + "\r\n": "kT9_Ozx3bQc",
		`INFO {"nonce":"abc"}`: "abc",
	} {
		if got, err := infoNonce(line); err != nil || got != want {
			t.Errorf("%q: %q %v", line, got, err)
		}
	}
	for _, line := range []string{`-ERR 'x'`, `INFO {"server_id":"N"}`, `INFO {"nonce":""}`, `INFO {"nonce":"abc`} {
		if got, err := infoNonce(line); err == nil {
			t.Errorf("%q: accepted, nonce %q", line, got)
		}
	}
}

func TestPercentiles(t *testing.T) {
	var d []time.Duration
	for i := 100; i >= 1; i-- {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	p50, p99, mx := Percentiles(d)
	if p50 != 50*time.Millisecond || p99 != 99*time.Millisecond || mx != 100*time.Millisecond {
		t.Fatalf("p50 %s p99 %s max %s", p50, p99, mx)
	}
	if a, b, c := Percentiles(nil); a != 0 || b != 0 || c != 0 {
		t.Fatal("percentiles of nothing")
	}
	if a, b, c := Percentiles([]time.Duration{7}); a != 7 || b != 7 || c != 7 {
		t.Fatal("percentiles of one")
	}
}

func TestLoopbackSources(t *testing.T) {
	s := LoopbackSources(300)
	if s[0].String() != "127.0.0.2" || s[253].String() != "127.0.0.255" || s[254].String() != "127.0.1.0" || len(s) != 300 {
		t.Fatalf("%v … %v", s[0], s[len(s)-1])
	}
}

// FuzzInfoNonce: any line a server might send; a nonce found is never
// empty and holds no quote.
func FuzzInfoNonce(f *testing.F) {
	f.Add(`INFO {"server_id":"N","nonce":"kT9_Ozx3bQc","headers":true}` + "\r\n")
	f.Add(`INFO {"nonce":"`)
	f.Add(`INFO {"nonce":""}`)
	f.Add("PING\r\n")
	f.Fuzz(func(t *testing.T, line string) {
		n, err := infoNonce(line)
		if err == nil && (n == "" || strings.Contains(n, `"`)) {
			t.Fatalf("nonce %q from %q", n, line)
		}
	})
}
