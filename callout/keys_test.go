package callout_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/nats-io/nkeys"
)

func TestKeysPersist(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	k1, err := callout.LoadOrCreateKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{callout.IssuerKeyFile, callout.XKeyFile, callout.ServiceKeyFile, callout.ProvisionerKeyFile, callout.AdminKeyFile, callout.SystemKeyFile, callout.KickerKeyFile}
	for _, name := range names {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", name, fi.Mode().Perm())
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != len(names) {
		t.Errorf("folder holds %d files, want %d (no temporary files left)", len(entries), len(names))
	}
	k2, err := callout.LoadOrCreateKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	if k1.IssuerPublicKey() != k2.IssuerPublicKey() || k1.XKeyPublicKey() != k2.XKeyPublicKey() ||
		k1.ServicePublicKey() != k2.ServicePublicKey() || k1.ProvisionerPublicKey() != k2.ProvisionerPublicKey() ||
		k1.AdminPublicKey() != k2.AdminPublicKey() || k1.SystemPublicKey() != k2.SystemPublicKey() {
		t.Fatal("reloading gave different keys")
	}
	if p := k1.IssuerPublicKey(); !nkeys.IsValidPublicAccountKey(p) {
		t.Errorf("issuer %q", p)
	}
	if p := k1.XKeyPublicKey(); !nkeys.IsValidPublicCurveKey(p) {
		t.Errorf("xkey %q", p)
	}
	if p := k1.ServicePublicKey(); !nkeys.IsValidPublicUserKey(p) {
		t.Errorf("service %q", p)
	}
}

// The keys nats.conf does not need to trust callout answers are made anew
// when missing: the provisioner, and the admin and system keys a folder
// of an earlier version lacks.
func TestKeysMissingRenewableAreAdded(t *testing.T) {
	dir := t.TempDir()
	k1, err := callout.LoadOrCreateKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{callout.ProvisionerKeyFile, callout.AdminKeyFile, callout.SystemKeyFile, callout.KickerKeyFile} {
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	k2, err := callout.LoadOrCreateKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	if k1.IssuerPublicKey() != k2.IssuerPublicKey() || k1.XKeyPublicKey() != k2.XKeyPublicKey() || k1.ServicePublicKey() != k2.ServicePublicKey() {
		t.Fatal("the keys nats.conf trusts changed")
	}
	if k1.ProvisionerPublicKey() == k2.ProvisionerPublicKey() || k1.AdminPublicKey() == k2.AdminPublicKey() || k1.SystemPublicKey() == k2.SystemPublicKey() {
		t.Fatal("want a fresh provisioner, admin and system key")
	}
	for _, name := range []string{callout.ProvisionerKeyFile, callout.AdminKeyFile, callout.SystemKeyFile, callout.KickerKeyFile} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestKeysRefuseToReplace(t *testing.T) {
	for name, damage := range map[string]func(dir string) error{
		"issuer missing": func(dir string) error { return os.Remove(filepath.Join(dir, callout.IssuerKeyFile)) },
		"xkey missing":   func(dir string) error { return os.Remove(filepath.Join(dir, callout.XKeyFile)) },
		"garbage": func(dir string) error {
			return os.WriteFile(filepath.Join(dir, callout.ServiceKeyFile), []byte("hello"), 0o600)
		},
		"wrong kind": func(dir string) error {
			seed, err := os.ReadFile(filepath.Join(dir, callout.ServiceKeyFile))
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dir, callout.IssuerKeyFile), seed, 0o600)
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := callout.LoadOrCreateKeys(dir); err != nil {
				t.Fatal(err)
			}
			if err := damage(dir); err != nil {
				t.Fatal(err)
			}
			damaged := snapshot(t, dir)
			_, err := callout.LoadOrCreateKeys(dir)
			if err == nil {
				t.Fatal("loaded damaged keys")
			}
			t.Log(err)
			if after := snapshot(t, dir); after != damaged {
				t.Fatal("loading damaged keys changed the folder")
			}
		})
	}
}

func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		b.WriteString(e.Name() + "=" + string(data) + "\n")
	}
	return b.String()
}
