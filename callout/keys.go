package callout

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Key file names inside the folder given to [LoadOrCreateKeys]. Each holds
// one nkey seed as text, mode 0600.
const (
	IssuerKeyFile      = "issuer.nk"      // account seed "SA…": signs responses and user JWTs
	XKeyFile           = "xkey.nk"        // curve seed "SX…": opens sealed requests
	ServiceKeyFile     = "service.nk"     // user seed "SU…": the callout service's own NATS login
	ProvisionerKeyFile = "provisioner.nk" // user seed "SU…": the chat-server's login into the chat account
	AdminKeyFile       = "admin.nk"       // user seed "SU…": the operator's read-only login into the chat account
	SystemKeyFile      = "system.nk"      // user seed "SU…": the operator's monitoring login into the system account
	KickerKeyFile      = "kicker.nk"      // user seed "SU…": the chat-server's login into the system account, to close revoked devices' connections
)

// Keys are the callout's long-lived keys, and the operator's two logins
// for the nats CLI. The public halves of all but the provisioner appear
// in the operator's nats.conf (see [NATSConfig]); changing the first three
// means editing that file and restarting NATS, so they are generated once
// and kept.
//
// A Keys value is immutable after loading and safe for concurrent use.
type Keys struct {
	// Issuer is an account key pair ("A…"). nats-server accepts callout
	// responses, and the user JWTs in them, only when signed by it.
	Issuer nkeys.KeyPair
	// XKey is a curve key pair ("X…"). The server seals each request to it
	// and the service seals the response back.
	XKey nkeys.KeyPair
	// Service is the user nkey ("U…") the callout service connects with. It
	// is listed in auth_users, so it bypasses the callout and lands in the
	// AUTH account where requests are published.
	Service nkeys.KeyPair
	// Provisioner is the user nkey ("U…") the chat-server uses to reach the
	// chat account: it is not in nats.conf; the callout itself authorizes it
	// with [GatePermissions] (provision the inbox stream and run the gate
	// between users and JetStream).
	Provisioner nkeys.KeyPair
	// Admin is a user nkey ("U…") for the operator: listed in the chat
	// account and in auth_users, it bypasses the callout and may read the
	// account's JetStream usage ("nats account info") and nothing of
	// users' mail (see [NATSConfig]). The chat-server never uses it. Nil
	// leaves it out of the snippet.
	Admin nkeys.KeyPair
	// System is a user nkey ("U…") for the operator's monitoring: listed
	// in the system account and in auth_users, it may ask the servers for
	// their monitoring reports ("nats server report") and nothing else
	// (see [NATSConfig]). The chat-server never uses it. Nil leaves it out
	// of the snippet.
	System nkeys.KeyPair
	// Kicker is the user nkey ("U…") the chat-server logs in to the
	// system account with, to close the connections of a revoked device:
	// listed there and in auth_users, it may list the user account's
	// connections and kick a connection by its ID, nothing else (see
	// [NATSConfig], [KickerOptions]). Nil leaves it out of the snippet,
	// and revoked devices stay connected until their user JWT expires
	// (refused by the gate meanwhile).
	Kicker nkeys.KeyPair
}

// GenerateKeys makes a fresh set of keys from crypto/rand.
func GenerateKeys() (*Keys, error) {
	var k Keys
	var err error
	if k.Issuer, err = nkeys.CreateAccount(); err != nil {
		return nil, fmt.Errorf("callout: generating the issuer key: %w", err)
	}
	if k.XKey, err = nkeys.CreateCurveKeys(); err != nil {
		return nil, fmt.Errorf("callout: generating the xkey: %w", err)
	}
	if k.Service, err = nkeys.CreateUser(); err != nil {
		return nil, fmt.Errorf("callout: generating the service key: %w", err)
	}
	if k.Provisioner, err = nkeys.CreateUser(); err != nil {
		return nil, fmt.Errorf("callout: generating the provisioner key: %w", err)
	}
	if k.Admin, err = nkeys.CreateUser(); err != nil {
		return nil, fmt.Errorf("callout: generating the admin key: %w", err)
	}
	if k.System, err = nkeys.CreateUser(); err != nil {
		return nil, fmt.Errorf("callout: generating the system key: %w", err)
	}
	if k.Kicker, err = nkeys.CreateUser(); err != nil {
		return nil, fmt.Errorf("callout: generating the kicker key: %w", err)
	}
	return &k, nil
}

type keyFile struct {
	name   string
	prefix nkeys.PrefixByte
	kp     *nkeys.KeyPair
}

func (k *Keys) files() []keyFile {
	return []keyFile{
		{IssuerKeyFile, nkeys.PrefixByteAccount, &k.Issuer},
		{XKeyFile, nkeys.PrefixByteCurve, &k.XKey},
		{ServiceKeyFile, nkeys.PrefixByteUser, &k.Service},
		{ProvisionerKeyFile, nkeys.PrefixByteUser, &k.Provisioner},
		{AdminKeyFile, nkeys.PrefixByteUser, &k.Admin},
		{SystemKeyFile, nkeys.PrefixByteUser, &k.System},
		{KickerKeyFile, nkeys.PrefixByteUser, &k.Kicker},
	}
}

// renewable reports whether a missing key file may be made anew in a
// folder that holds the others: the keys nats.conf does not need to
// trust callout answers. The provisioner is not in nats.conf at all; the
// admin and system keys are the operator's own logins, and the kicker
// the chat-server's way to close revoked devices' connections (print the
// snippet again to use new ones).
func renewable(name string) bool {
	return name == ProvisionerKeyFile || name == AdminKeyFile || name == SystemKeyFile || name == KickerKeyFile
}

// LoadOrCreateKeys loads the keys kept in dir, or, when dir holds none of
// them, generates them and writes them there (the folder is created with
// mode 0700, each file with 0600, each written to a temporary file and
// renamed so a crash never leaves half a key).
//
// If only some of the issuer, xkey and service keys exist it returns an
// error rather than replace them: the operator's nats.conf names them.
// Missing provisioner, admin, system and kicker keys are generated beside
// the others (a folder made by an earlier version has no admin, system or
// kicker key), since no callout answer depends on them.
func LoadOrCreateKeys(dir string) (*Keys, error) {
	var k Keys
	files := k.files()
	var present, missing []string
	for _, f := range files {
		seed, err := os.ReadFile(filepath.Join(dir, f.name))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			missing = append(missing, f.name)
			continue
		case err != nil:
			return nil, fmt.Errorf("callout: reading key: %w", err)
		}
		kp, err := parseSeed(f.prefix, seed)
		if err != nil {
			return nil, fmt.Errorf("callout: key file %s: %w", filepath.Join(dir, f.name), err)
		}
		*f.kp = kp
		present = append(present, f.name)
	}
	if len(missing) == 0 {
		return &k, nil
	}
	fresh, err := GenerateKeys()
	if err != nil {
		return nil, err
	}
	onlyRenewable := true
	for _, name := range missing {
		onlyRenewable = onlyRenewable && renewable(name)
	}
	if len(present) > 0 && !onlyRenewable {
		return nil, fmt.Errorf("callout: %s has %s but not %s; restore the missing files from a backup, or empty the folder to make new keys (and update nats.conf)",
			dir, strings.Join(present, ", "), strings.Join(missing, ", "))
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("callout: key folder: %w", err)
	}
	freshFiles := fresh.files()
	for i, f := range files {
		if *f.kp != nil {
			continue
		}
		*f.kp = *freshFiles[i].kp
		seed, err := (*f.kp).Seed()
		if err != nil {
			return nil, fmt.Errorf("callout: key seed: %w", err)
		}
		if err := writeFileAtomic(filepath.Join(dir, f.name), append(seed, '\n')); err != nil {
			return nil, err
		}
	}
	return &k, nil
}

func parseSeed(want nkeys.PrefixByte, b []byte) (nkeys.KeyPair, error) {
	seed := []byte(strings.TrimSpace(string(b)))
	pre, _, err := nkeys.DecodeSeed(seed)
	if err != nil {
		return nil, fmt.Errorf("not an nkey seed: %w", err)
	}
	if pre != want {
		return nil, fmt.Errorf("holds a %s seed, want %s", pre, want)
	}
	return nkeys.FromSeed(seed)
}

func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("callout: writing key: %w", err)
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("callout: writing key: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("callout: writing key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("callout: writing key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("callout: writing key: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("callout: writing key: %w", err)
	}
	return nil
}

func mustPublic(kp nkeys.KeyPair) string {
	pub, err := kp.PublicKey()
	if err != nil {
		panic("callout: public key of a loaded key pair: " + err.Error()) // unreachable for seeds
	}
	return pub
}

// IssuerPublicKey returns the issuer account key ("A…"), the value of
// auth_callout.issuer.
func (k *Keys) IssuerPublicKey() string { return mustPublic(k.Issuer) }

// XKeyPublicKey returns the curve key ("X…"), the value of auth_callout.xkey.
func (k *Keys) XKeyPublicKey() string { return mustPublic(k.XKey) }

// ServicePublicKey returns the service user key ("U…"), listed in the AUTH
// account and in auth_callout.auth_users.
func (k *Keys) ServicePublicKey() string { return mustPublic(k.Service) }

// ProvisionerPublicKey returns the provisioner user key ("U…").
func (k *Keys) ProvisionerPublicKey() string { return mustPublic(k.Provisioner) }

// AdminPublicKey returns the admin user key ("U…"), listed in the chat
// account and in auth_callout.auth_users, or "" if k has none.
func (k *Keys) AdminPublicKey() string { return optionalPublic(k.Admin) }

// SystemPublicKey returns the system user key ("U…"), listed in the
// system account and in auth_callout.auth_users, or "" if k has none.
func (k *Keys) SystemPublicKey() string { return optionalPublic(k.System) }

// KickerPublicKey returns the kicker user key ("U…"), listed in the
// system account and in auth_callout.auth_users, or "" if k has none.
func (k *Keys) KickerPublicKey() string { return optionalPublic(k.Kicker) }

func optionalPublic(kp nkeys.KeyPair) string {
	if kp == nil {
		return ""
	}
	return mustPublic(kp)
}

// nkeyOption logs in with kp, signing the server's nonce.
func nkeyOption(kp nkeys.KeyPair) nats.Option {
	return nats.Nkey(mustPublic(kp), kp.Sign)
}

// ServiceOptions returns the nats.go options that log in as the callout
// service user: its nkey and a name. Pass them to nats.Connect and hand the
// connection to [Service.Listen].
func (k *Keys) ServiceOptions() []nats.Option {
	return []nats.Option{nkeyOption(k.Service), nats.Name("kez-callout")}
}

// ProvisionerOptions returns the nats.go options that log in as the
// provisioner, which the callout places in the chat account: its nkey, a
// private reply prefix and a name. A [Service] must be listening for the
// login to succeed.
func (k *Keys) ProvisionerOptions() []nats.Option {
	return []nats.Option{
		nkeyOption(k.Provisioner),
		nats.CustomInboxPrefix(wire.GateReplyPrefix + k.ProvisionerPublicKey()),
		nats.Name("kez-provisioner"),
		nats.Timeout(5 * time.Second), // longer than the server's auth timeout
	}
}

// KickerOptions returns the nats.go options that log in as the kicker
// in the system account: its nkey, its own reply prefix
// ([KickReplyPrefix], the only subjects it may subscribe to) and a name.
// k.Kicker must not be nil.
func (k *Keys) KickerOptions() []nats.Option {
	return []nats.Option{
		nkeyOption(k.Kicker),
		nats.CustomInboxPrefix(KickReplyPrefix),
		nats.Name("kez-kicker"),
	}
}
