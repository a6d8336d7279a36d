package kez

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

const zooWords = "zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo vote"

func TestDeviceSaveLoad(t *testing.T) {
	dev := mustIdentity(t, countingWords)
	person := mustIdentity(t, zooWords).PublicKey()
	for _, pass := range [][]byte{nil, []byte("correct horse battery staple")} {
		dir := filepath.Join(t.TempDir(), "kez")
		if ok, err := HasDevice(dir); ok || err != nil {
			t.Fatalf("HasDevice before save: %v %v", ok, err)
		}
		if _, _, err := LoadDevice(dir, pass); !errors.Is(err, ErrNoDevice) {
			t.Fatalf("LoadDevice before save: %v", err)
		}
		if err := SaveDevice(dir, dev, person, pass, testWorkFactor); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(DevicePath(dir))
		if err != nil {
			t.Fatal(err)
		}
		if runtime.GOOS != "windows" && st.Mode().Perm() != 0o600 {
			t.Errorf("mode %o, want 600", st.Mode().Perm())
		}
		data, _ := os.ReadFile(DevicePath(dir))
		if pass == nil && !bytes.Equal(data, encodeDevicePlain(dev, person)) {
			t.Fatalf("plain file:\n%s", data)
		}
		if pass != nil && (!bytes.HasPrefix(data, []byte("age-encryption.org/v1\n-> scrypt ")) || bytes.Contains(data, []byte(person.String()))) {
			t.Fatalf("not an age scrypt file hiding the person:\n%q", data[:min(len(data), 80)])
		}
		got, gotPerson, err := LoadDevice(dir, pass)
		if err != nil {
			t.Fatal(err)
		}
		if got.PublicKey() != dev.PublicKey() || !bytes.Equal(got.Seed(), dev.Seed()) || gotPerson != person {
			t.Fatal("loaded another device or person")
		}
		if ok, _ := HasDevice(dir); !ok {
			t.Fatal("HasDevice after save")
		}
		if ok, _ := HasIdentity(dir); ok {
			t.Fatal("a device file counts as an identity")
		}
		if pass != nil {
			if _, _, err := LoadDevice(dir, nil); !errors.Is(err, ErrPassphraseRequired) {
				t.Errorf("no passphrase: %v", err)
			}
			if _, _, err := LoadDevice(dir, []byte("wrong")); !errors.Is(err, ErrWrongPassphrase) {
				t.Errorf("wrong passphrase: %v", err)
			}
		}
	}
}

// TestDeviceFileSpecExample checks the example of docs/spec/identity.md.
func TestDeviceFileSpecExample(t *testing.T) {
	spec, err := os.ReadFile("../docs/spec/identity.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```\n(kez-device/v1\n.*?\n)```").FindSubmatch(spec)
	if m == nil {
		t.Fatal("no kez-device/v1 example in identity.md")
	}
	dev := mustIdentity(t, countingWords)
	person := mustIdentity(t, zooWords).PublicKey()
	if want := encodeDevicePlain(dev, person); !bytes.Equal(m[1], want) {
		t.Fatalf("identity.md shows\n%s\nthe code writes\n%s", m[1], want)
	}
}

func TestDeviceSaveRefusals(t *testing.T) {
	dir := t.TempDir()
	dev := mustIdentity(t, countingWords)
	other := mustIdentity(t, zooWords)
	if err := SaveDevice(dir, dev, dev.PublicKey(), nil); err == nil {
		t.Fatal("saved a device that is its own person")
	}
	if err := SaveDevice(dir, dev, PublicKey{}, nil); err == nil {
		t.Fatal("saved a device without a person")
	}
	if err := SaveDevice(dir, nil, other.PublicKey(), nil); err == nil {
		t.Fatal("saved a nil device")
	}
	if err := SaveDevice(dir, dev, other.PublicKey(), nil); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(DevicePath(dir))
	if err := SaveDevice(dir, other, dev.PublicKey(), nil); !errors.Is(err, ErrDeviceExists) {
		t.Fatalf("second save: %v", err)
	}
	if after, _ := os.ReadFile(DevicePath(dir)); !bytes.Equal(before, after) {
		t.Fatal("a refused save changed the file")
	}
	if err := SaveDevice(dir, other, dev.PublicKey(), nil, Overwrite()); err != nil {
		t.Fatal(err)
	}
	if got, p, err := LoadDevice(dir, nil); err != nil || got.PublicKey() != other.PublicKey() || p != dev.PublicKey() {
		t.Fatalf("after overwrite: %v", err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("left behind: %v", ents)
	}
	if runtime.GOOS != "windows" {
		os.Chmod(DevicePath(dir), 0o640)
		if _, _, err := LoadDevice(dir, nil); !errors.Is(err, ErrInsecurePermissions) {
			t.Fatalf("mode 0640: %v", err)
		}
	}
}

func TestDeviceBadFiles(t *testing.T) {
	dev := mustIdentity(t, countingWords)
	person := mustIdentity(t, zooWords).PublicKey()
	plain := encodeDevicePlain(dev, person)
	identity := encodePlain(dev)
	encIdentity, err := EncodeIdentityFile(dev, []byte("pw"), 10)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string][]byte{
		"empty":                  {},
		"an identity file":       identity,
		"an encrypted identity":  encIdentity,
		"no person line":         plain[:bytes.Index(plain, []byte("person: "))],
		"truncated person":       plain[:len(plain)-1],
		"person is the device":   []byte(strings.Replace(string(plain), person.String(), dev.PublicKey().String(), 1)),
		"damaged person":         bytes.Replace(plain, []byte("person: U"), []byte("person: X"), 1),
		"extra line":             append(bytes.Clone(plain), "name: laptop\n"...),
		"v2":                     bytes.Replace(plain, []byte("/v1"), []byte("/v2"), 1),
		"crlf":                   bytes.ReplaceAll(plain, []byte("\n"), []byte("\r\n")),
		"seed of another key":    bytes.Replace(plain, []byte("key: "+dev.PublicKey().String()), []byte("key: "+person.String()), 1),
		"person before the seed": []byte(deviceHeader + "person: " + person.String() + "\n" + string(identity[len(plainHeader):])),
	}
	for name, data := range cases {
		_, _, err := DecodeDeviceFile(data, []byte("pw"))
		if !errors.Is(err, ErrBadIdentityFile) {
			t.Errorf("%s: got %v, want ErrBadIdentityFile", name, err)
		}
	}
	// And the identity decoder refuses a device file: one cannot be taken
	// for the other.
	if _, err := DecodeIdentityFile(plain, nil); !errors.Is(err, ErrBadIdentityFile) {
		t.Errorf("a device file read as an identity: %v", err)
	}
}
