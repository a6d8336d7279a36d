package chatserver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/chatserver"
	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/natsconn"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/sigchain/sqlitestore"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// Two relay addresses with real peer ids.
const (
	relay1 = "/ip4/192.0.2.1/tcp/4002/p2p/12D3KooWGRUVh7J9thJ9ik9tEBE1pEpZeLD1W5z4GxqzPMxB5Nh8"
	relay2 = "/ip4/192.0.2.2/udp/4002/quic-v1/p2p/QmcgpsyWgH8Y8ajJz1Cu72KnS5uo2Aa2LpzU7kinSupNKC"
)

// syncBuffer collects log text from concurrent writers and tells waiters
// about each write.
type syncBuffer struct {
	mu      sync.Mutex
	b       strings.Builder
	written chan struct{}
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{written: make(chan struct{}, 1)} }

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case b.written <- struct{}{}:
	default:
	}
	return b.b.Write(p)
}

// waitFor waits until the text contains s.
func (b *syncBuffer) waitFor(t testing.TB, s string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for !strings.Contains(b.String(), s) {
		select {
		case <-b.written:
		case <-timeout:
			t.Fatalf("no %q in the log:\n%s", s, b)
		}
	}
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// sigServer runs a real sig-server on a SQLite file.
func sigServer(t testing.TB) *httptest.Server {
	t.Helper()
	st, err := sqlitestore.Open(filepath.Join(t.TempDir(), "sig.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	srv := httptest.NewServer(sigchain.NewHandler(st, sigchain.WithLogger(quiet)))
	t.Cleanup(srv.Close)
	return srv
}

// newServer makes (but does not start) a chat-server in a fresh folder.
func newServer(t testing.TB, sigURL, natsURL, keysDir string) *chatserver.Server {
	t.Helper()
	dir := t.TempDir()
	if keysDir == "" {
		keysDir = filepath.Join(dir, "keys")
	}
	return &chatserver.Server{
		Domain:       "kez.test",
		SigServerURL: sigURL,
		NATSURL:      natsURL,
		NATSOptions:  []nats.Option{nats.ReconnectWait(20 * time.Millisecond), nats.ReconnectJitter(5*time.Millisecond, 5*time.Millisecond)},
		DBPath:       filepath.Join(dir, "chat.db"),
		KeysDir:      keysDir,
		Logger:       quiet,
	}
}

func start(t testing.TB, s *chatserver.Server) {
	t.Helper()
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
}

func waitReady(t testing.TB, s *chatserver.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
}

// getJSON fetches url, decodes a JSON answer into out (if not nil) and
// returns the status.
func getJSON(t testing.TB, url string, out any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("GET %s: %d, not JSON: %v", url, resp.StatusCode, err)
		}
	}
	return resp.StatusCode
}

// natsOnPort starts an in-process NATS with conf on a chosen port.
func natsOnPort(t testing.TB, conf string, port int) *natstest.Server {
	t.Helper()
	o, err := server.ProcessConfigFile(natstest.WriteConfig(t, conf))
	if err != nil {
		t.Fatal(err)
	}
	o.Port = port
	return natstest.RunOptions(t, o)
}

// inboxStream returns the configuration of the inbox stream in the chat
// account, as the server reports it, or nil.
func inboxStream(t testing.TB, srv *server.Server) *server.StreamConfig {
	t.Helper()
	jsz, err := srv.Jsz(&server.JSzOptions{Account: callout.DefaultChatAccount, Streams: true, Config: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range jsz.AccountDetails {
		for _, sd := range a.Streams {
			if sd.Name == callout.DefaultStream {
				return sd.Config
			}
		}
	}
	return nil
}

// The server starts without NATS, says why it is not ready, serves the
// registry meanwhile, and becomes ready once NATS comes up.
func TestStartBeforeNATS(t *testing.T) {
	sig := sigServer(t)
	port := natstest.FreePort(t)
	url := "nats://127.0.0.1:" + itoa(port)
	s := newServer(t, sig.URL, url, "")
	s.Relays = []string{relay1, strings.Replace(relay2, "/p2p/", "/ipfs/", 1)}
	h := httptest.NewServer(s.Handler()) // before Start: 503
	t.Cleanup(h.Close)
	var e struct{ Error string }
	if code := getJSON(t, h.URL+"/v1/info", &e); code != http.StatusServiceUnavailable || !strings.Contains(e.Error, "not running") {
		t.Fatalf("before Start: %d %q", code, e.Error)
	}
	if err := s.Ready(context.Background()); !errors.Is(err, chatserver.ErrNotStarted) {
		t.Fatalf("Ready before Start: %v", err)
	}
	start(t, s)

	var info handles.Info
	if code := getJSON(t, h.URL+"/v1/info", &info); code != 200 || info.Domain != "kez.test" || info.SigServer != sig.URL ||
		len(info.Relays) != 2 || info.Relays[0] != relay1 || info.Relays[1] != relay2 {
		t.Fatalf("/v1/info: %d %+v", code, info)
	}
	if code := getJSON(t, h.URL+"/readyz", &e); code != http.StatusServiceUnavailable || !strings.Contains(e.Error, "not logged in to NATS at "+url) || !strings.Contains(e.Error, "nats-config") {
		t.Fatalf("/readyz without NATS: %d %q", code, e.Error)
	}

	conf, err := chatserver.NATSConfig(s.KeysDir, callout.ConfigOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ns := natsOnPort(t, conf, port)
	waitReady(t, s)
	if code := getJSON(t, h.URL+"/readyz", nil); code != 200 {
		t.Fatalf("/readyz: %d", code)
	}
	cfg := inboxStream(t, ns.Server())
	if cfg == nil {
		t.Fatal("the inbox stream was not provisioned")
	}
	if got, want := cfg.MaxMsgSize, (callout.InboxConfig{}).StreamConfig().MaxMsgSize; got != want {
		t.Errorf("stream max message size %d, want %d", got, want)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	if err := s.Ready(context.Background()); !errors.Is(err, chatserver.ErrClosed) {
		t.Fatalf("Ready after Close: %v", err)
	}
	if code := getJSON(t, h.URL+"/v1/info", nil); code != http.StatusServiceUnavailable {
		t.Fatalf("/v1/info after Close: %d", code)
	}
	if err := s.Start(context.Background()); !errors.Is(err, chatserver.ErrClosed) {
		t.Fatalf("Start after Close: %v", err)
	}
}

// A lost JetStream store is noticed after the reconnect and the stream is
// made again.
func TestStreamProvisionedAgainAfterStoreLoss(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice, bob := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	st.NATS().Shutdown()
	entries, _ := os.ReadDir(st.NATS().StoreDir())
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(st.NATS().StoreDir(), e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	st.RestartNATS()
	if inboxStream(t, st.NATS().Server()) == nil {
		t.Fatal("stream not provisioned again")
	}
	for _, u := range []*stacktest.User{alice, bob} {
		nc, err := login(u.Identity, st.NATSURL)
		if err != nil {
			t.Fatalf("%s after the restart: %v", u.Name, err)
		}
		nc.Close()
	}
}

// A chat-server whose keys are not the ones in nats.conf cannot log in,
// and says what to do.
func TestKeysNotInNATSConfig(t *testing.T) {
	conf, err := chatserver.NATSConfig(t.TempDir(), callout.ConfigOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ns := natstest.Run(t, conf)
	s := newServer(t, sigServer(t).URL, ns.ClientURL(), "") // fresh, other keys
	log := newSyncBuffer()
	s.Logger = slog.New(slog.NewTextHandler(log, nil))
	start(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err = s.WaitReady(ctx)
	if err == nil || !strings.Contains(err.Error(), "nats-config") {
		t.Fatalf("WaitReady: %v", err)
	}
	log.waitFor(t, "NATS refused the login")
	if n := strings.Count(log.String(), "NATS refused the login"); n != 1 {
		t.Errorf("warned %d times; once per outage is enough", n)
	}
}

func TestLoginsAndMetrics(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice := st.NewUser(t, "alice")
	st.NewUser(t, "alice") // renewed
	bob := st.NewUser(t, "bob")

	nc, err := login(alice.Identity, st.NATSURL)
	if err != nil {
		t.Fatalf("alice: %v", err)
	}
	nc.Close()
	if _, err := login(stacktest.Identity("stranger"), st.NATSURL); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("stranger: %v", err)
	}
	// A suspended handle may not log in.
	if err := st.Chat.Store().SetSuspended(context.Background(), bob.Handle, true); err != nil {
		t.Fatal(err)
	}
	if _, err := login(bob.Identity, st.NATSURL); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("suspended bob: %v", err)
	}
	// A malformed claim is refused.
	resp, err := http.Post(st.ServerURL+"/v1/handles", "application/json", strings.NewReader("{"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad claim: %d", resp.StatusCode)
	}
	// A look-alike of bob is refused, and counted as such.
	b0b := handles.Handle{Name: "b0b", Domain: st.Domain}
	if _, err := handles.Register(context.Background(), stacktest.Identity("b0b"), b0b,
		handles.RegisterOptions{ServerURL: st.ServerURL, SigServerURL: st.SigServerURL}); !errors.Is(err, handles.ErrTaken) {
		t.Fatalf("registering b0b with bob taken: %v", err)
	}

	metrics := fetch(t, st.ServerURL+"/metrics")
	for _, want := range []string{
		`kez_chat_authorizations_total{result="allowed"} `,
		`kez_chat_authorizations_total{result="denied"} 2`,
		`kez_chat_authorizations_total{result="malformed"} 0`,
		`kez_chat_handle_claims_total{result="created"} 2`,
		`kez_chat_handle_claims_total{result="renewed"} 1`,
		`kez_chat_handle_claims_total{result="refused"} 2`,
		`kez_chat_handle_lookalikes_refused_total 1`,
		`kez_chat_handle_claims_total{result="failed"} 0`,
		`kez_chat_nats_connected 1`,
		`kez_http_requests_total{code="201",method="POST",route="POST /v1/handles"} 2`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if strings.Contains(metrics, `kez_chat_authorizations_total{result="allowed"} 0`) {
		t.Error("no allowed login counted")
	}
}

func TestRoutes(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice := st.NewUser(t, "alice")
	var rec handles.LookupRecord
	if code := getJSON(t, st.ServerURL+"/v1/handles/alice", &rec); code != 200 || rec.Key != alice.Key.String() {
		t.Fatalf("lookup: %d %+v", code, rec)
	}
	var jrd handles.JRD
	if code := getJSON(t, st.ServerURL+"/.well-known/webfinger?resource=acct:alice@kez.test", &jrd); code != 200 || jrd.Subject != "acct:alice@kez.test" {
		t.Fatalf("webfinger: %d %+v", code, jrd)
	}
	info, err := (&handles.Client{BaseURL: st.ServerURL + "/"}).Info(context.Background())
	if err != nil || info.Domain != st.Domain || info.SigServer != st.SigServerURL {
		t.Fatalf("Info: %v %+v", err, info)
	}
	if code := getJSON(t, st.ServerURL+"/healthz", nil); code != 200 {
		t.Fatalf("/healthz: %d", code)
	}
}

func TestStartErrors(t *testing.T) {
	sig := sigServer(t)
	for name, tc := range map[string]struct {
		mutate func(*chatserver.Server)
		want   string
	}{
		"no sig-server":         {func(s *chatserver.Server) { s.SigServerURL = "" }, "SigServerURL is required"},
		"bad sig-server":        {func(s *chatserver.Server) { s.SigServerURL = "ftp://x" }, "http:// or https://"},
		"no NATS":               {func(s *chatserver.Server) { s.NATSURL = "" }, "NATSURL is required"},
		"bad domain":            {func(s *chatserver.Server) { s.Domain = "localhost:1" }, "development"},
		"keys not a dir":        {func(s *chatserver.Server) { s.KeysDir = sig.URL }, "callout keys"},
		"relay without peer id": {func(s *chatserver.Server) { s.Relays = []string{"/ip4/192.0.2.1/tcp/4002"} }, "not a relay address"},
		"relay twice":           {func(s *chatserver.Server) { s.Relays = []string{relay1, relay1} }, "twice"},
		"too many relays": {func(s *chatserver.Server) {
			for range handles.MaxRelays + 1 {
				s.Relays = append(s.Relays, relay1)
			}
		}, "at most 8"},
	} {
		t.Run(name, func(t *testing.T) {
			s := newServer(t, sig.URL, "nats://127.0.0.1:1", "")
			if name == "keys not a dir" {
				f := filepath.Join(t.TempDir(), "file")
				os.WriteFile(f, nil, 0o600)
				s.KeysDir = f
			} else {
				tc.mutate(s)
			}
			err := s.Start(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Start: %v, want %q", err, tc.want)
			}
			s.Close()
		})
	}

	// No domain: no default either (a forgotten one must not register
	// users under someone else's domain), and nothing is served.
	s := newServer(t, sig.URL, "nats://127.0.0.1:1", "")
	s.Domain = ""
	if err := s.Start(context.Background()); !errors.Is(err, chatserver.ErrNoDomain) {
		t.Fatalf("Start without a domain: %v, want ErrNoDomain", err)
	}
	h := httptest.NewServer(s.Handler())
	t.Cleanup(h.Close)
	if code := getJSON(t, h.URL+chatserver.InfoPath, nil); code != http.StatusServiceUnavailable {
		t.Fatalf("/v1/info of a server that did not start: %d", code)
	}
	s.Close()

	// Twice, and two servers on one registry.
	reg := prometheus.NewRegistry()
	a := newServer(t, sig.URL, "nats://127.0.0.1:1", "")
	a.Registry = reg
	start(t, a)
	if err := a.Start(context.Background()); err == nil {
		t.Fatal("second Start succeeded")
	}
	b := newServer(t, sig.URL, "nats://127.0.0.1:1", "")
	b.Registry = reg
	if err := b.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "own Registry") {
		t.Fatalf("shared registry: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c := newServer(t, sig.URL, "nats://127.0.0.1:1", "")
	if err := c.Start(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Start: %v", err)
	}
}

func TestRegistryDirectory(t *testing.T) {
	store, err := handles.OpenSQLite(filepath.Join(t.TempDir(), "handles.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ctx := context.Background()
	d := chatserver.RegistryDirectory{Store: store}
	alice := stacktest.Identity("alice").PublicKey()
	if _, err := d.Lookup(ctx, alice); !errors.Is(err, callout.ErrUnknownKey) {
		t.Fatalf("unknown key: %v", err)
	}
	h := handles.Handle{Name: "alice", Domain: "kez.test"}
	if _, err := store.Claim(ctx, handles.Record{Handle: h, Key: alice, EncryptionKey: make([]byte, 32), UpdatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	e, err := d.Lookup(ctx, alice)
	if err != nil || e != (callout.Entry{Handle: "alice@kez.test", Person: alice}) {
		t.Fatalf("registered: %+v %v", e, err)
	}
	store.SetSuspended(ctx, h, true)
	if e, _ := d.Lookup(ctx, alice); !e.Suspended {
		t.Fatal("suspension not seen")
	}
	store.Close()
	if _, err := d.Lookup(ctx, alice); err == nil || errors.Is(err, callout.ErrUnknownKey) {
		t.Fatalf("a closed registry must be an error, not an unknown key: %v", err)
	}
}

// login connects as id the way chat.Connect does, without reconnecting.
func login(id *kez.Identity, url string) (*nats.Conn, error) {
	return natsconn.Connect(context.Background(), url, id, nats.NoReconnect())
}

func fetch(t testing.TB, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return b.String()
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
