package natsconn

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// Connect's clients back off by default; a caller that chose its own
// reconnect timing keeps it.
func TestDefaultBackoffUnlessChosen(t *testing.T) {
	apply := func(opts ...nats.Option) nats.Options {
		o := nats.GetDefaultOptions()
		for _, opt := range append(opts, defaultBackoff) {
			if err := opt(&o); err != nil {
				t.Fatal(err)
			}
		}
		return o
	}
	if o := apply(); o.CustomReconnectDelayCB == nil {
		t.Error("no backoff by default")
	} else if d := o.CustomReconnectDelayCB(1); d < 0 || d >= DefaultBackoff.Min {
		t.Errorf("first wait %s, want below %s", d, DefaultBackoff.Min)
	}
	if o := apply(nats.ReconnectWait(10 * time.Millisecond)); o.CustomReconnectDelayCB != nil {
		t.Error("nats.ReconnectWait was replaced by the backoff")
	}
	own := Backoff{Min: time.Second, Max: time.Second, Rand: func(n int64) int64 { return n - 1 }}
	if o := apply(own.Option()); o.CustomReconnectDelayCB(1) != time.Second-1 {
		t.Error("the caller's backoff was replaced")
	}
}
