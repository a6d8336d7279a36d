package systemtest

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/loginflood"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/natsconn"
	"github.com/nats-io/nats.go"
)

// loginFloodScale is the flood TestLoginFloodProcesses offers: issue 13's
// figure, 1,000 bogus logins/s from 64 connections, for 30 s with
// KEZ_LONG=1 and for 5 s by default.
func loginFloodScale() (rate float64, conns int, d time.Duration) {
	if long() {
		return 1000, 64, 30 * time.Second
	}
	return 1000, 64, 5 * time.Second
}

// TestLoginFloodProcesses performs issue 13's "login flood" against the
// processes an operator runs (nats-server with the snippet,
// kez-chat-server, kez-sig-server): bogus logins spoken in the raw NATS
// protocol from 64 connections and 16 other loopback addresses (keys
// nobody registered with valid signatures, random signatures, and a
// registered user's key with random signatures), while 20 registered users
// log in from 127.0.0.1 every 25 ms. It asserts that at least 99% of the
// users' logins succeed within 2 s, that no bogus login gets in, that
// every refusal the flood saw was the callout's (its metrics), and that
// the chat-server logs a summary at INFO, not a line per denial.
//
// "all load" runs the chat-server with --login-backoff-max 0, so that the
// whole offered load reaches the callout; "defaults" runs it as shipped,
// whose backoff slows a flood that waits for its answers.
func TestLoginFloodProcesses(t *testing.T) {
	rate, conns, d := loginFloodScale()
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"all load", []string{"--login-backoff-max", "0"}},
		{"defaults", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := startProcStack(t, procOptions{NoHTTPLimits: true, ChatArgs: append([]string{"--log-level", "info", "--login-summary-every", "1s"}, tc.args...)})
			ctx := testCtx(t, d+3*time.Minute)
			var users []*user
			for i := range 20 {
				users = append(users, st.register(t, fmt.Sprintf("legit%d", i)))
			}
			login := func(id *kez.Identity) func(context.Context) error {
				return func(ctx context.Context) error {
					nc, err := natsconn.Connect(ctx, st.NATSURL, id, nats.NoReconnect())
					if err != nil {
						return err
					}
					nc.Close()
					return nil
				}
			}
			for _, u := range users { // users who logged in before
				if err := login(u.id)(ctx); err != nil {
					t.Fatalf("%s: %v", u.name, err)
				}
			}
			// Positive controls: the meter counts a refused login as a
			// failure, and without a flood every login succeeds.
			if m := loginflood.Measure(ctx, 3, 0, 2*time.Second, login(stacktest.Identity("mallory"))); m.Failed != 3 || m.Ratio() != 0 {
				t.Fatalf("an unregistered key's logins measured as %s", m)
			}
			base := loginflood.Measure(ctx, 40, 25*time.Millisecond, 2*time.Second, login(users[0].id))
			if base.Ratio() != 1 {
				t.Fatalf("without a flood: %s", base)
			}
			before := scrape(t, st.ChatURL)
			logBefore := len(st.chatLog())

			fc := loginflood.Config{
				Addr: strings.TrimPrefix(st.NATSURL, "nats://"), Rate: rate, Conns: conns, Duration: d,
				Kinds:   []loginflood.Kind{loginflood.UnknownKey, loginflood.BadSignature, loginflood.ForgedKey},
				Victim:  users[0].key,
				Sources: loginflood.LoopbackSources(16),
				Seed:    13,
			}
			var m loginflood.Stats
			i := 0
			fl, err := loginflood.RunDuring(ctx, fc, func() {
				m = loginflood.Measure(ctx, int(d/(25*time.Millisecond)), 25*time.Millisecond, 2*time.Second, func(ctx context.Context) error {
					u := users[i%len(users)]
					i++
					return login(u.id)(ctx)
				})
			})
			if err != nil {
				t.Fatal(err)
			}
			after := scrape(t, st.ChatURL)
			during := st.chatLog()[logBefore:]
			lines := strings.Count(during, "\n")
			t.Logf("without a flood: %s", base)
			t.Logf("flood, %.0f/s offered from %d connections for %s: %s", rate, conns, d, fl)
			t.Logf("registered users meanwhile: %s", m)
			t.Logf("chat-server: %s; %d log lines at INFO while flooded", after.diff(before), lines)

			if fl.Accepted != 0 {
				t.Fatalf("%d bogus logins got in", fl.Accepted)
			}
			if fl.Denied == 0 || fl.Failed > fl.Attempts/100 {
				t.Fatalf("the flood did not run: %s (first error: %s)", fl, fl.FirstError)
			}
			refused := after.sum("kez_chat_login_denials_total") - before.sum("kez_chat_login_denials_total") +
				after.sum("kez_chat_login_dropped_total") - before.sum("kez_chat_login_dropped_total")
			if refused < float64(fl.Denied) {
				t.Fatalf("the flood saw %d refusals, the callout made %.0f", fl.Denied, refused)
			}
			if m.N == 0 || m.Ratio() < 0.99 {
				t.Fatalf("registered users' logins under the flood: %s (first error: %s)", m, m.FirstError)
			}
			if strings.Contains(during, `msg="login denied"`) || !strings.Contains(during, `msg="logins refused"`) || lines > 3*int(d/time.Second)+10 {
				t.Fatalf("want a summary per second at INFO and no line per denial; the chat-server logged:\n%s", tail(during, 4000))
			}
			if tc.args == nil {
				held := after.get(`kez_chat_login_backoffs_total{action="delayed"}`) + after.get(`kez_chat_login_backoffs_total{action="unanswered"}`)
				if held == 0 || fl.Rate() >= rate/2 {
					t.Fatalf("the default backoff did not slow the flood: %s; held %.0f", fl, held)
				}
			}
		})
	}
}

// metricsScrape is one scrape of a /metrics page: value by series.
type metricsScrape map[string]float64

var metricLine = regexp.MustCompile(`(?m)^(kez_[a-z_]+(?:\{[^}]*\})?) ([0-9.e+-]+)$`)

// scrape reads the chat-server's kez_… metrics.
func scrape(t testing.TB, base string) metricsScrape {
	t.Helper()
	b := getBody(t, base+"/metrics")
	out := metricsScrape{}
	for _, m := range metricLine.FindAllStringSubmatch(b, -1) {
		v, err := strconv.ParseFloat(m[2], 64)
		if err == nil {
			out[m[1]] = v
		}
	}
	return out
}

func (m metricsScrape) get(series string) float64 { return m[series] }

// sum adds every series of the metric name.
func (m metricsScrape) sum(name string) float64 {
	total := 0.0
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			total += v
		}
	}
	return total
}

// diff describes the login metrics that changed since before.
func (m metricsScrape) diff(before metricsScrape) string {
	var parts []string
	for k, v := range m {
		if strings.HasPrefix(k, "kez_chat_login_") && strings.HasSuffix(strings.SplitN(k, "{", 2)[0], "_total") && v != before[k] {
			parts = append(parts, fmt.Sprintf("%s +%.0f", strings.TrimPrefix(k, "kez_chat_login_"), v-before[k]))
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}
