package chatserver_test

import (
	"context"
	"errors"
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
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// devicePerson is a registered person whose chain the test extends, at
// the sig-server sigURL.
type devicePerson struct {
	id     *kez.Identity
	sigURL string
}

func newDevicePerson(t testing.TB, sigURL, serverURL, name string) *devicePerson {
	t.Helper()
	return &devicePerson{id: register(t, sigURL, serverURL, name), sigURL: sigURL}
}

// addDevice links a new device key to p and registers it at serverURL.
func (p *devicePerson) addDevice(t testing.TB, serverURL, name string) *kez.Identity {
	t.Helper()
	dev, req := stacktest.NewDeviceRequest(t, name)
	l := stacktest.AppendLinkAt(t, p.sigURL, p.id, sigchain.TypeAddDevice, sigchain.AddDeviceBody(req))
	if _, created := stacktest.RegisterDeviceLinkAt(t, serverURL, l); !created {
		t.Fatalf("registering %s: not created", name)
	}
	return dev
}

// revoke appends and registers a revoke_device link for dev at serverURL.
func (p *devicePerson) revoke(t testing.TB, serverURL string, dev kez.PublicKey) {
	t.Helper()
	l := stacktest.AppendLinkAt(t, p.sigURL, p.id, sigchain.TypeRevokeDevice, sigchain.RevokeDeviceBody(dev))
	if info, _ := stacktest.RegisterDeviceLinkAt(t, serverURL, l); !info.Revoked {
		t.Fatalf("revoking: %+v", info)
	}
}

// deviceConn logs in as id, noting when the broker closes the connection.
type deviceConn struct {
	gateUser
	closed chan time.Time
}

func deviceLogin(t testing.TB, url string, id *kez.Identity) *deviceConn {
	t.Helper()
	d := &deviceConn{gateUser: gateUser{key: id.PublicKey(), errs: make(chan error, 64)}, closed: make(chan time.Time, 1)}
	var once sync.Once
	nc, err := natsconn.Connect(context.Background(), url, id, nats.NoReconnect(),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case d.errs <- err:
			default:
			}
		}),
		nats.ClosedHandler(func(*nats.Conn) { once.Do(func() { d.closed <- time.Now() }) }))
	if err != nil {
		t.Fatalf("login of %s: %v", id.PublicKey(), err)
	}
	t.Cleanup(nc.Close)
	d.nc = nc
	return d
}

// replicas runs NATS with the snippet and one or two chat-servers sharing
// the keys and a JetStream registry. The second one's kicker key is not the
// one nats.conf lists, so it cannot close connections: a revocation it
// stores reaches the first only through the gate's notice.
type replicas struct {
	natsURL string
	urls    [2]string
	servers [2]*chatserver.Server
	sigURL  string
}

func startReplicas(t *testing.T, n int, lim chatserver.MailLimits) *replicas {
	t.Helper()
	return startReplicasAt(t, n, lim, nil)
}

// startReplicasAt is startReplicas with the servers' clock now (nil: the
// time).
func startReplicasAt(t *testing.T, n int, lim chatserver.MailLimits, now func() time.Time) *replicas {
	t.Helper()
	sig := sigServer(t)
	keysDir := t.TempDir()
	conf, err := chatserver.NATSConfig(keysDir, callout.ConfigOptions{AuthJetStream: true})
	if err != nil {
		t.Fatal(err)
	}
	ns := natstest.Run(t, conf)
	otherKeys := t.TempDir()
	for _, f := range []string{callout.IssuerKeyFile, callout.XKeyFile, callout.ServiceKeyFile, callout.ProvisionerKeyFile} {
		b, err := os.ReadFile(filepath.Join(keysDir, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(otherKeys, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r := &replicas{natsURL: ns.ClientURL(), sigURL: sig.URL}
	for i, dir := range []string{keysDir, otherKeys}[:n] {
		s := newServer(t, sig.URL, ns.ClientURL(), dir)
		s.StoreBackend = chatserver.StoreJetStream
		s.HTTPLimits = handles.NoLimits()
		s.MailLimits = lim
		s.Now = now
		start(t, s)
		h := httptest.NewServer(s.Handler())
		t.Cleanup(h.Close)
		waitReady(t, s)
		r.servers[i], r.urls[i] = s, h.URL
	}
	return r
}

// TestDeviceRevocationBites: a person's device logs in with its own key,
// receives and sends through the gate, holds only its own subjects; its
// revocation at one chat-server closes its open connection (the kicker,
// real nats-server), refuses its next login, deletes its consumer, empties
// its inbox and makes it no recipient. The times from the revocation to
// the close and to the refused login are logged.
func TestDeviceRevocationBites(t *testing.T) {
	r := startReplicas(t, 2, chatserver.MailLimits{})
	alice := newDevicePerson(t, r.sigURL, r.urls[0], "alice")
	bobID := register(t, r.sigURL, r.urls[0], "bob")
	phone := alice.addDevice(t, r.urls[0], "phone")
	laptop := alice.addDevice(t, r.urls[0], "laptop")
	bob := deviceLogin(t, r.natsURL, bobID)
	p := deviceLogin(t, r.natsURL, phone)

	// The phone receives mail sent to it and sends as itself.
	if code, _ := gateCode(t, bob.send(t, phone.PublicKey(), []byte("to the phone"))); code != 0 {
		t.Fatalf("send to a device: %d", code)
	}
	if code, _ := gateCode(t, p.send(t, bobID.PublicKey(), []byte("from the phone"))); code != 0 {
		t.Fatalf("send from a device: %d", code)
	}
	// It holds only its own subjects: not alice's, not the laptop's.
	for _, other := range []kez.PublicKey{alice.id.PublicKey(), laptop.PublicKey()} {
		for _, subj := range []string{
			callout.SendSubjectPrefix + bobID.PublicKey().String() + "." + other.String(),
			callout.PullSubjectPrefix + other.String(),
			callout.ConsumerSubjectPrefix + other.String(),
			callout.AckSubjectPrefix + other.String(),
		} {
			p.nc.Publish(subj, []byte(`{"batch":1,"deliver":"x"}`))
			p.wantViolation(t, subj)
		}
		if _, err := p.nc.SubscribeSync(callout.DeliverSubjectPrefix + other.String() + ".>"); err != nil {
			t.Fatal(err)
		}
		p.wantViolation(t, callout.DeliverSubjectPrefix+other.String())
	}
	if code, _ := gateCode(t, bob.send(t, phone.PublicKey(), []byte("unread at the revocation"))); code != 0 {
		t.Fatalf("send: %d", code)
	}

	start := time.Now()
	alice.revoke(t, r.urls[0], phone.PublicKey())
	answered := time.Since(start)
	var closed time.Duration
	select {
	case at := <-p.closed:
		closed = at.Sub(start)
	case <-time.After(10 * time.Second):
		t.Fatal("the revoked device's connection stayed open")
	}
	_, err := natsconn.Connect(context.Background(), r.natsURL, phone, nats.NoReconnect())
	refused := time.Since(start)
	if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("the revoked device's next login: %v", err)
	}
	t.Logf("revocation: answered after %v, connection closed after %v, next login refused after %v", answered, closed, refused)

	// Its consumer is gone, its inbox empty, and mail to it is refused.
	js := adminJetStream(t, r)
	if _, err := js.Consumer(context.Background(), callout.DefaultStream, callout.ConsumerName(phone.PublicKey())); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("the revoked device's consumer: %v", err)
	}
	stream, err := js.Stream(context.Background(), callout.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(context.Background(), jetstream.WithSubjectFilter(callout.InboxSubjectPrefix+phone.PublicKey().String()+".>"))
	if err != nil || len(info.State.Subjects) != 0 {
		t.Fatalf("the revoked device's inbox: %v %v", info.State.Subjects, err)
	}
	for range 4 { // both replicas' gates
		if code, _ := gateCode(t, bob.send(t, phone.PublicKey(), []byte("after"))); code != callout.ErrCodeRecipientRevoked {
			t.Fatalf("send to a revoked device: %d", code)
		}
	}
	// The laptop and the person's own key are unaffected.
	l := deviceLogin(t, r.natsURL, laptop)
	if code, _ := gateCode(t, bob.send(t, laptop.PublicKey(), []byte("to the laptop"))); code != 0 {
		t.Fatalf("send to the other device: %d", code)
	}
	if code, _ := gateCode(t, l.send(t, bobID.PublicKey(), []byte("from the laptop"))); code != 0 {
		t.Fatalf("send from the other device: %d", code)
	}
	if code, _ := gateCode(t, bob.send(t, alice.id.PublicKey(), []byte("to alice"))); code != 0 {
		t.Fatalf("send to the person: %d", code)
	}
}

// adminJetStream reaches the inbox stream as the chat-server does, through
// the provisioner login.
func adminJetStream(t testing.TB, r *replicas) jetstream.JetStream {
	t.Helper()
	keys := r.servers[0].Keys()
	nc, err := nats.Connect(r.natsURL, keys.ProvisionerOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// TestDeviceRevokedElsewhere: a revocation stored by the other replica,
// which cannot close connections, reaches this one's gate at once: the
// device, still connected, may no longer send, pull, ask for its consumer
// or acknowledge, however recently this gate admitted it.
func TestDeviceRevokedElsewhere(t *testing.T) {
	r := startReplicas(t, 2, chatserver.MailLimits{})
	alice := newDevicePerson(t, r.sigURL, r.urls[0], "alice")
	bobID := register(t, r.sigURL, r.urls[0], "bob")
	laptop := alice.addDevice(t, r.urls[0], "laptop")
	l := deviceLogin(t, r.natsURL, laptop)
	bob := deviceLogin(t, r.natsURL, bobID)
	for range 4 { // both gates know the laptop as a sender and a recipient
		if code, _ := gateCode(t, l.send(t, bobID.PublicKey(), []byte("hi"))); code != 0 {
			t.Fatalf("send: %d", code)
		}
		if code, _ := gateCode(t, bob.send(t, laptop.PublicKey(), []byte("hi"))); code != 0 {
			t.Fatalf("send: %d", code)
		}
	}
	sub, err := l.nc.SubscribeSync(callout.DeliverSubjectPrefix + laptop.PublicKey().String() + ".t1")
	if err != nil {
		t.Fatal(err)
	}
	l.nc.Publish(callout.PullSubjectPrefix+laptop.PublicKey().String(), []byte(`{"batch":1,"no_wait":true,"deliver":"t1"}`))
	delivered, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}

	// The kicker's gauge: up at the replica whose kicker nats.conf lists,
	// 0 at the other, whose kicker login NATS refuses.
	waitMetricURL(t, r.urls[0], "kez_chat_kicker_connected", 1)
	if body := fetch(t, r.urls[1]+"/metrics"); !strings.Contains(body, "\nkez_chat_kicker_connected 0\n") {
		t.Errorf("the replica without a kicker login: %s", grepLines(body, "kez_chat_kicker"))
	}

	start := time.Now()
	alice.revoke(t, r.urls[1], laptop.PublicKey())
	r.servers[1].Close() // only the first replica's gate answers now
	var took time.Duration
	for {
		// A send the closing replica took and never answered is lost:
		// ask again.
		m := nats.NewMsg(callout.SendSubjectPrefix + bobID.PublicKey().String() + "." + laptop.PublicKey().String())
		m.Data = []byte("after")
		resp, err := l.nc.RequestMsg(m, 250*time.Millisecond)
		if errors.Is(err, nats.ErrTimeout) {
			continue
		} else if err != nil {
			t.Fatal(err)
		}
		code, _ := gateCode(t, resp)
		if code == callout.ErrCodeSenderRevoked {
			took = time.Since(start)
			break
		}
		if code != 0 || time.Since(start) > 5*time.Second {
			t.Fatalf("send of a device revoked elsewhere: %d after %v", code, time.Since(start))
		}
	}
	t.Logf("revocation at one replica refused at the other after %v", took)
	if !l.nc.IsConnected() {
		t.Fatal("the replica without a kicker closed the connection")
	}
	// Pulls, acknowledgements and consumer requests are dropped or refused.
	l.nc.Publish(callout.PullSubjectPrefix+laptop.PublicKey().String(), []byte(`{"batch":1,"deliver":"t1"}`))
	l.nc.Publish(callout.AckSubjectPrefix+laptop.PublicKey().String(), []byte("+ACK "+delivered.Reply+"\n"))
	m, err := l.nc.Request(callout.ConsumerSubjectPrefix+laptop.PublicKey().String(), nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := gateCode(t, m); code != callout.ErrCodeSenderRevoked {
		t.Fatalf("consumer request of a revoked device: %d", code)
	}
	waitMetricURL(t, r.urls[0], `kez_chat_gate_refusals_total{reason="revoked_device"}`, 4) // two sends? one send, pull, ack, consumer
	if code, _ := gateCode(t, bob.send(t, laptop.PublicKey(), []byte("after"))); code != callout.ErrCodeRecipientRevoked {
		t.Fatalf("send to a device revoked elsewhere: %d", code)
	}
	if _, err := natsconn.Connect(context.Background(), r.natsURL, laptop, nats.NoReconnect()); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("next login: %v", err)
	}
}

// waitMetricURL waits until the sample at the server's /metrics is at
// least want.
func waitMetricURL(t testing.TB, url, sample string, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		body := fetch(t, url+"/metrics")
		for _, line := range strings.Split(body, "\n") {
			if v, ok := strings.CutPrefix(line, sample+" "); ok && atoi(v) >= want {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s stayed under %d:\n%s", sample, want, grepLines(body, "kez_chat_gate_refusals"))
		}
	}
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// TestDeviceSenderAllowanceIsThePersons: a person's devices share one
// sender allowance: adding devices does not multiply it.
func TestDeviceSenderAllowanceIsThePersons(t *testing.T) {
	r := startReplicas(t, 1, chatserver.MailLimits{SenderRate: 0.001, SenderBurst: 3}) // one gate, one set of buckets
	alice := newDevicePerson(t, r.sigURL, r.urls[0], "alice")
	bobID := register(t, r.sigURL, r.urls[0], "bob")
	var conns []*deviceConn
	conns = append(conns, deviceLogin(t, r.natsURL, alice.id))
	for _, name := range []string{"phone", "laptop", "tablet"} {
		conns = append(conns, deviceLogin(t, r.natsURL, alice.addDevice(t, r.urls[0], name)))
	}
	var codes []int
	for _, c := range conns {
		code, _ := gateCode(t, c.send(t, bobID.PublicKey(), []byte("hi")))
		codes = append(codes, code)
	}
	if codes[0] != 0 || codes[1] != 0 || codes[2] != 0 || codes[3] != callout.ErrCodeSenderQuota {
		t.Fatalf("four devices' sends under a burst of 3: %v", codes)
	}
	// Bob, another person, has his own.
	b := deviceLogin(t, r.natsURL, bobID)
	if code, _ := gateCode(t, b.send(t, alice.id.PublicKey(), []byte("hi"))); code != 0 {
		t.Fatalf("bob: %d", code)
	}
}

// TestSnippetKickerUser: the kicker login may list the user account's
// connections and kick one, and nothing else.
func TestSnippetKickerUser(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice := gateLogin(t, st, "alice")
	keys, err := callout.LoadOrCreateKeys(st.KeysDir)
	if err != nil {
		t.Fatal(err)
	}
	k := &operator{gateUser{errs: make(chan error, 64)}}
	nc, err := nats.Connect(st.NATSURL, append(keys.KickerOptions(), nats.NoReconnect(),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { k.errs <- err }))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	k.nc = nc
	var a struct {
		Server struct {
			ID string `json:"id"`
		} `json:"server"`
		Data struct {
			Conns []struct {
				Cid  uint64 `json:"cid"`
				User string `json:"authorized_user"`
			} `json:"connections"`
		} `json:"data"`
	}
	k.ask(t, "$SYS.REQ.ACCOUNT."+callout.DefaultUserAccount+".CONNZ", &a)
	if a.Server.ID == "" || len(a.Data.Conns) == 0 {
		t.Fatalf("connz: %+v", a)
	}
	for _, subj := range []string{
		"$SYS.REQ.ACCOUNT." + callout.DefaultChatAccount + ".CONNZ",
		"$SYS.REQ.SERVER.PING.CONNZ",
		"$SYS.REQ.SERVER." + a.Server.ID + ".RELOAD",
		"$SYS.REQ.SERVER." + a.Server.ID + ".LDM",
		"$SYS.REQ.SERVER.PING",
		"$JS.API.ACCOUNT.PURGE." + callout.DefaultChatAccount,
		"$SYS.REQ.USER.AUTH",
		callout.InboxSubjectPrefix + alice.key.String() + ".forged",
	} {
		k.refused(t, false, subj)
	}
	for _, subj := range []string{">", "$SYS.>", "_INBOX.>"} {
		k.refused(t, true, subj)
	}
	if !alice.nc.IsConnected() {
		t.Fatal("alice was disconnected")
	}
}
