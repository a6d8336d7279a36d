package chat

import (
	"bytes"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/logtest"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/translog/logserver"
)

// viewHeader routes a client's requests to the lying sig-server's other
// face (see startViewStack).
const viewHeader = "X-Test-View"

// viewTransport marks every request of a client with its view.
type viewTransport struct{ view string }

func (t viewTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(viewHeader, t.view)
	return http.DefaultTransport.RoundTrip(r)
}

// viewStack is a stack whose sig-server keeps a log, and can lie: its
// address serves the honest server's handler, except the chain reads and
// the log reads of a client whose requests say "liar", which another
// server answers, with the same log key and another history.
type viewStack struct {
	st            *stacktest.Stack
	honest, liar  *logtest.Server
	alice, bob    *stacktest.User
	evil          *sigchain.Link // the link only the liar holds
	honestHistory string
}

// startViewStack starts the stack and registers alice and bob (at the
// honest server, and copied to the liar). With split, the two logs then
// differ at the same size: the honest one logs carol's eldest link, the
// liar an add_device link of alice's chain (an attacker's device, signed
// with her words) that her own client never sees.
func startViewStack(t *testing.T, split bool) *viewStack {
	t.Helper()
	key := filepath.Join(t.TempDir(), "log.key")
	vs := &viewStack{honest: logtest.Start(t, logtest.Options{KeyFile: key}), liar: logtest.Start(t, logtest.Options{KeyFile: key})}
	vs.st = stacktest.Start(t, stacktest.Options{WrapSigServer: func(http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			chainRead := strings.HasPrefix(r.URL.Path, sigchain.ChainsPath) && !strings.Contains(strings.TrimPrefix(r.URL.Path, sigchain.ChainsPath), "/")
			logRead := r.URL.Path == logserver.InfoPath || strings.HasPrefix(r.URL.Path, logserver.LogPath)
			if r.Header.Get(viewHeader) == "liar" && r.Method == http.MethodGet && (chainRead || logRead) {
				vs.liar.Logged.ServeHTTP(w, r)
				return
			}
			vs.honest.Logged.ServeHTTP(w, r)
		})
	}})
	vs.alice, vs.bob = vs.st.NewUser(t, "alice"), vs.st.NewUser(t, "bob")
	for _, u := range []*stacktest.User{vs.alice, vs.bob} {
		links, err := vs.honest.Client(nil).Fetch(testCtx(t), u.Key, 0)
		if err != nil {
			t.Fatal(err)
		}
		appendChainAt(t, vs.liar, links)
	}
	if split {
		vs.st.NewUser(t, "carol")
		_, req := stacktest.NewDeviceRequest(t, "evil")
		l, err := sigchain.NewLink(vs.alice.Identity, vs.alice.Chain, sigchain.TypeAddDevice, sigchain.AddDeviceBody(req), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		appendChainAt(t, vs.liar, []*sigchain.Link{l})
		vs.evil = l
	}
	return vs
}

func appendChainAt(t *testing.T, s *logtest.Server, links []*sigchain.Link) {
	t.Helper()
	for _, l := range links {
		if err := s.Client(nil).Append(testCtx(t), l); err != nil {
			t.Fatalf("appending seqno %d: %v", l.Seqno(), err)
		}
	}
}

// shownTo opens a client that the sig-server shows view ("liar" or "").
func shownTo(view string) clientOpt {
	return func(c *Config) {
		c.Client.HTTPClient = &http.Client{Transport: viewTransport{view}, Timeout: 20 * time.Second}
	}
}

// onSplit records the split views a client reports.
type onSplit struct {
	mu  sync.Mutex
	got []SplitView
}

func (o *onSplit) opt() clientOpt {
	return func(c *Config) {
		c.OnSplitView = func(s SplitView) { o.mu.Lock(); o.got = append(o.got, s); o.mu.Unlock() }
	}
}

// TestLogViewSplitDetected: a sig-server shows bob a chain of alice's
// with an extra device (and its log, with the same key, a history that
// says so) and alice her honest one. After ONE message between them, the
// receiver has recorded a split view naming both checkpoints and flagged
// the sender: in either direction.
func TestLogViewSplitDetected(t *testing.T) {
	for _, dir := range []string{"alice to bob", "bob to alice"} {
		t.Run(dir, func(t *testing.T) {
			vs := startViewStack(t, true)
			var seen onSplit
			optsA, optsB := []clientOpt{shownTo("")}, []clientOpt{shownTo("liar")}
			if dir == "alice to bob" {
				optsB = append(optsB, seen.opt())
			} else {
				optsA = append(optsA, seen.opt())
			}
			a := openClient(t, vs.st, vs.alice, optsA...)
			b := openClient(t, vs.st, vs.bob, optsB...)
			from, to := a, b
			if dir == "bob to alice" {
				from, to = b, a
			}
			mustAdd(t, a, "bob")
			ct := mustAdd(t, b, "alice")
			if len(ct.Devices) != 2 {
				t.Fatalf("bob was not shown the extra device: %+v", ct.Devices)
			}
			honestCP, _ := a.cc.Log.Latest(testCtx(t), vs.st.SigServerURL)
			liarCP, _ := b.cc.Log.Latest(testCtx(t), vs.st.SigServerURL)
			if honestCP == nil || liarCP == nil || bytes.Equal(honestCP, liarCP) {
				t.Fatalf("the two clients hold checkpoints %q and %q", honestCP, liarCP)
			}

			mustSend(t, from, to.user.Name, "hello")
			receiveN(t, to, 1)

			svs, err := to.SplitViews(testCtx(t))
			if err != nil || len(svs) != 1 {
				t.Fatalf("%s recorded %d split views (%v), want 1; stats %+v", to.user.Name, len(svs), err, to.Stats())
			}
			sv := svs[0]
			ours, theirs := liarCP, honestCP
			if to == a {
				ours, theirs = honestCP, liarCP
			}
			if !bytes.Equal(sv.Ours, ours) || !bytes.Equal(sv.Theirs, theirs) || sv.Contact != from.user.Key || sv.Origin != logtest.Origin || sv.Reason == "" {
				t.Fatalf("split view %+v\nwant ours %q theirs %q", sv, ours, theirs)
			}
			seen.mu.Lock()
			told := len(seen.got)
			seen.mu.Unlock()
			if told != 1 {
				t.Fatalf("OnSplitView told %d times", told)
			}
			got, err := to.Contact(testCtx(t), from.user.Name)
			if err != nil || got.Flag != FlagChainRewritten {
				t.Fatalf("%s's contact %s: %+v, %v; want flagged chain_rewritten", to.user.Name, from.user.Name, got, err)
			}
			if !contains(to.log.String(), "SPLIT VIEW") || !contains(to.log.String(), strings.ReplaceAll(string(theirs), "\n", `\n`)) {
				t.Fatal("the split view was not logged with both checkpoints")
			}
			if all, err := RecordedSplitViews(testCtx(t), to.cc.Home); err != nil || len(all) != 1 {
				t.Fatalf("RecordedSplitViews: %d, %v", len(all), err)
			}
		})
	}
}
