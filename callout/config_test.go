package callout_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/nats-io/nats-server/v2/server"
)

func TestNATSConfigParses(t *testing.T) {
	keys, err := callout.GenerateKeys()
	if err != nil {
		t.Fatal(err)
	}
	conf, err := callout.NATSConfig(keys, callout.ConfigOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"SA", "SU", "SX"} {
		for _, line := range strings.Split(conf, "\n") {
			if strings.Contains(line, " "+secret) {
				t.Fatalf("config may hold a seed: %q", line)
			}
		}
	}
	path := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("%v\n%s", err, conf)
	}
	ac := o.AuthCallout
	if ac == nil || ac.Issuer != keys.IssuerPublicKey() || ac.Account != "AUTH" || ac.XKey != keys.XKeyPublicKey() ||
		strings.Join(ac.AuthUsers, " ") != keys.ServicePublicKey()+" "+keys.AdminPublicKey()+" "+keys.SystemPublicKey()+" "+keys.KickerPublicKey() {
		t.Fatalf("auth_callout %+v", ac)
	}
	if !o.JetStream || o.SystemAccount != "SYS" || o.AuthTimeout != 2 {
		t.Fatalf("jetstream %v system %q timeout %v", o.JetStream, o.SystemAccount, o.AuthTimeout)
	}
	accounts := map[string]string{}
	for _, u := range o.Nkeys {
		accounts[u.Nkey] = u.Account.Name
	}
	if len(o.Nkeys) != 4 || accounts[keys.ServicePublicKey()] != "AUTH" || accounts[keys.AdminPublicKey()] != "CHAT" ||
		accounts[keys.SystemPublicKey()] != "SYS" || accounts[keys.KickerPublicKey()] != "SYS" {
		t.Fatalf("nkeys %+v", accounts)
	}

	// Keys without the operator's two and the kicker leave them out.
	keys.Admin, keys.System, keys.Kicker = nil, nil, nil
	conf, err = callout.NATSConfig(keys, callout.ConfigOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(conf, "permissions") || !strings.Contains(conf, "auth_users: [ "+keys.ServicePublicKey()+" ]") || !strings.Contains(conf, "  SYS {}\n") {
		t.Fatalf("without the admin and system keys:\n%s", conf)
	}
	natstest.Run(t, conf)
}

func TestStandaloneConfigRuns(t *testing.T) {
	keys, err := callout.GenerateKeys()
	if err != nil {
		t.Fatal(err)
	}
	store := t.TempDir()
	conf, err := callout.NATSConfig(keys, callout.ConfigOptions{
		Standalone: true, Listen: "127.0.0.1:14222", HTTPListen: "127.0.0.1:18222", StoreDir: store,
		ChatAccount: "KEZ", AuthTimeout: 3 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("%v\n%s", err, conf)
	}
	if o.Host != "127.0.0.1" || o.Port != 14222 || o.HTTPPort != 18222 || o.StoreDir != store || !o.JetStream || o.AuthTimeout != 3 {
		t.Fatalf("standalone options: host %q port %d http %d store %q js %v", o.Host, o.Port, o.HTTPPort, o.StoreDir, o.JetStream)
	}
	// And it runs (natstest moves the ports and store to free ones).
	s := natstest.Run(t, conf)
	if _, err := s.Server().LookupAccount("KEZ"); err != nil {
		t.Fatal(err)
	}
}

func TestNATSConfigRejects(t *testing.T) {
	keys, _ := callout.GenerateKeys()
	for name, o := range map[string]callout.ConfigOptions{
		"bad account":      {ChatAccount: "CHAT }"},
		"same accounts":    {ChatAccount: "AUTH"},
		"fractional":       {AuthTimeout: 1500 * time.Millisecond},
		"standalone store": {Standalone: true},
		"negative payload": {UserMaxPayload: -1},
		"huge payload":     {UserMaxPayload: 1 << 31},
		"negative subs":    {UserMaxSubscriptions: -1},
	} {
		if _, err := callout.NATSConfig(keys, o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
