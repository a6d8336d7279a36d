package chatserver_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/chatserver"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/nats-io/nkeys"
)

// recordHandler hands every log record to a channel.
type recordHandler struct{ records chan slog.Record }

func (h recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.records <- r.Clone()
	return nil
}
func (h recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h recordHandler) WithGroup(string) slog.Handler      { return h }

// nextRecord returns the next record whose message is msg.
func nextRecord(t *testing.T, records <-chan slog.Record, msg string) slog.Record {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case r := <-records:
			if r.Message == msg {
				return r
			}
		case <-timeout:
			t.Fatalf("no %q logged", msg)
		}
	}
}

// attr returns the value of a record's attribute.
func attr(r slog.Record, key string) string {
	var v string
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value.String()
			return false
		}
		return true
	})
	return v
}

// A server that cannot reach NATS says so in its log within a second of
// starting, with the reason /readyz gives, and says when it is ready.
func TestNotReadyIsLoggedWithinASecond(t *testing.T) {
	port := natstest.FreePort(t)
	s := newServer(t, sigServer(t).URL, "nats://127.0.0.1:"+itoa(port), "")
	records := make(chan slog.Record, 1024)
	s.Logger = slog.New(recordHandler{records})
	started := time.Now()
	start(t, s)

	r := nextRecord(t, records, "chat-server not ready")
	if d := r.Time.Sub(started); d > time.Second {
		t.Errorf("the reason was logged %v after the start; want within a second", d)
	}
	reason := attr(r, "reason")
	if !strings.Contains(reason, "not logged in to NATS") || r.Level != slog.LevelWarn {
		t.Errorf("logged %v %q", r.Level, reason)
	}
	if err := s.Ready(context.Background()); err == nil || err.Error() != reason {
		t.Errorf("Ready says %v, the log %q", err, reason)
	}

	conf, err := chatserver.NATSConfig(s.KeysDir, callout.ConfigOptions{})
	if err != nil {
		t.Fatal(err)
	}
	natsOnPort(t, conf, port)
	nextRecord(t, records, "chat-server ready")
	if err := s.Ready(context.Background()); err != nil {
		t.Fatalf("logged ready, but Ready says %v", err)
	}
}

// A nats-server that seals authorization requests to a key the server's
// xkey does not open, as one older than v2.10.4 does (its nkeys seals to
// a zero key), or as one does whose nats.conf names another xkey, makes
// the server not ready with a reason naming both causes.
func TestUnopenableRequestsNameTheCause(t *testing.T) {
	zero, err := nkeys.Encode(nkeys.PrefixByteCurve, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	other, _ := nkeys.CreateCurveKeys()
	otherPub, _ := other.PublicKey()
	for name, xkey := range map[string]string{"a zero key": string(zero), "another xkey": otherPub} {
		t.Run(name, func(t *testing.T) {
			s := newServer(t, sigServer(t).URL, "", "")
			keys, err := callout.LoadOrCreateKeys(s.KeysDir)
			if err != nil {
				t.Fatal(err)
			}
			conf, err := callout.NATSConfig(keys, callout.ConfigOptions{})
			if err != nil {
				t.Fatal(err)
			}
			s.NATSURL = natstest.Run(t, strings.Replace(conf, "xkey: "+keys.XKeyPublicKey(), "xkey: "+xkey, 1)).ClientURL()
			records := make(chan slog.Record, 1024)
			s.Logger = slog.New(recordHandler{records})
			start(t, s)

			// The provisioner's login is the first request NATS seals.
			r := nextRecord(t, records, "NATS's authorization requests do not open with this service's xkey; every login fails until they do. "+
				"A nats-server older than v2.10.4 seals them to a zero key, or nats.conf names another auth_callout xkey")
			if r.Level != slog.LevelError {
				t.Errorf("logged at %v", r.Level)
			}
			err = s.Ready(context.Background())
			if !errors.Is(err, callout.ErrCannotOpen) {
				t.Fatalf("Ready = %v, want ErrCannotOpen", err)
			}
			for _, want := range []string{"v2.10.4", "zero key", "auth_callout xkey", s.KeysDir} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("the reason %q does not say %q", err, want)
				}
			}
			if r := nextRecord(t, records, "chat-server not ready"); !strings.Contains(attr(r, "reason"), "v2.10.4") {
				t.Errorf("logged %q", attr(r, "reason"))
			}
		})
	}
}
