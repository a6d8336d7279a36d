package kez

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// DeviceFileName is the name of the device file inside a state folder.
const DeviceFileName = "device"

// Device file errors, beside those the identity file shares with it
// ([ErrPassphraseRequired], [ErrWrongPassphrase], [ErrBadIdentityFile],
// [ErrInsecurePermissions]).
var (
	// ErrNoDevice: the folder holds no device file.
	ErrNoDevice = errors.New("kez: no device key in this folder")
	// ErrDeviceExists: SaveDevice was asked not to overwrite one.
	ErrDeviceExists = errors.New("kez: a device key already exists in this folder")
)

// deviceHeader starts the plain form of a device file.
const deviceHeader = "kez-device/v1\n"

// DevicePath returns the path of the device file in dir.
func DevicePath(dir string) string { return filepath.Join(dir, DeviceFileName) }

// HasDevice reports whether dir holds a device file.
func HasDevice(dir string) (bool, error) {
	_, err := os.Lstat(DevicePath(dir))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("kez: checking for a device key: %w", err)
	}
	return true, nil
}

// SaveDevice writes dir/device: the key dev that this install logs in
// with, a device of the person whose primary key is person (the key the
// person's sigchain certifies it under). It is written as [SaveIdentity]
// writes the identity file (mode 0600, through a synced temporary file,
// encrypted with an age scrypt recipient when passphrase is not empty)
// and, like it, never replaces an existing file unless [Overwrite] is
// given; the error then wraps [ErrDeviceExists]. dev must not be person's
// own key: an install holding the primary key uses it as its device and
// needs no device file. The format is in docs/spec/identity.md.
func SaveDevice(dir string, dev *Identity, person PublicKey, passphrase []byte, opts ...SaveOption) error {
	cfg := saveConfig{workFactor: DefaultScryptWorkFactor}
	for _, o := range opts {
		o(&cfg)
	}
	data, err := EncodeDeviceFile(dev, person, passphrase, cfg.workFactor)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("kez: making the state folder: %w", err)
	}
	path := DevicePath(dir)
	if !cfg.overwrite {
		if ok, err := HasDevice(dir); err != nil {
			return err
		} else if ok {
			return fmt.Errorf("%w (%s)", ErrDeviceExists, path)
		}
	}
	return writeFileAtomic(path, data, cfg.overwrite, ErrDeviceExists)
}

// LoadDevice reads the device file in dir and returns the device key and
// its person. The passphrase is needed only for an encrypted file. Errors
// wrap [ErrNoDevice], [ErrPassphraseRequired], [ErrWrongPassphrase],
// [ErrBadIdentityFile] or [ErrInsecurePermissions], as [LoadIdentity]'s.
func LoadDevice(dir string, passphrase []byte) (*Identity, PublicKey, error) {
	path := DevicePath(dir)
	data, err := readKeyFile(path, "device key")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, PublicKey{}, fmt.Errorf("%w (%s)", ErrNoDevice, dir)
	}
	if err != nil {
		return nil, PublicKey{}, err
	}
	dev, person, err := DecodeDeviceFile(data, passphrase)
	if err != nil {
		return nil, PublicKey{}, fmt.Errorf("%w (%s)", err, path)
	}
	return dev, person, nil
}

// EncodeDeviceFile returns the bytes of a device file (see [SaveDevice]).
// workFactor is the scrypt log2 N, used only with a passphrase; 0 means
// [DefaultScryptWorkFactor].
func EncodeDeviceFile(dev *Identity, person PublicKey, passphrase []byte, workFactor int) ([]byte, error) {
	if dev == nil || len(dev.seed) != 64 {
		return nil, errors.New("kez: no device key to save")
	}
	if person.IsZero() {
		return nil, errors.New("kez: a device key needs its person's key")
	}
	if person == dev.pub {
		return nil, errors.New("kez: the device key is the person's own key")
	}
	if workFactor == 0 {
		workFactor = DefaultScryptWorkFactor
	}
	return encryptIfAsked(encodeDevicePlain(dev, person), passphrase, workFactor)
}

// encodeDevicePlain is the v1 plain form: the identity file's lines under
// another header, then the person's key.
func encodeDevicePlain(dev *Identity, person PublicKey) []byte {
	var b bytes.Buffer
	b.WriteString(deviceHeader)
	b.Write(encodePlain(dev)[len(plainHeader):])
	b.WriteString("person: " + person.String() + "\n")
	return b.Bytes()
}

// DecodeDeviceFile parses the bytes of a device file, as [LoadDevice]
// does without the file-system checks.
func DecodeDeviceFile(data, passphrase []byte) (*Identity, PublicKey, error) {
	return decodeDeviceFile(data, passphrase, maxScryptWorkFactor)
}

func decodeDeviceFile(data, passphrase []byte, maxWorkFactor int) (*Identity, PublicKey, error) {
	plain, err := openKeyFile(data, passphrase, maxWorkFactor, deviceHeader, "device key")
	if err != nil {
		return nil, PublicKey{}, err
	}
	dev, rest, err := decodeKeyLines(plain[len(deviceHeader):])
	if err != nil {
		return nil, PublicKey{}, err
	}
	personLine, rest, ok := bytes.Cut(rest, []byte("\n"))
	if !ok {
		return nil, PublicKey{}, fmt.Errorf("%w: the file is truncated", ErrBadIdentityFile)
	}
	if len(rest) != 0 {
		return nil, PublicKey{}, fmt.Errorf("%w: unexpected text after the person line", ErrBadIdentityFile)
	}
	personText, ok := bytes.CutPrefix(personLine, []byte("person: "))
	if !ok {
		return nil, PublicKey{}, fmt.Errorf("%w: want a \"person: \" line after the seed", ErrBadIdentityFile)
	}
	person, err := ParsePublicKey(string(personText))
	if err != nil {
		return nil, PublicKey{}, fmt.Errorf("%w: damaged person line: %w", ErrBadIdentityFile, err)
	}
	if person == dev.pub {
		return nil, PublicKey{}, fmt.Errorf("%w: the device key is the person's own key", ErrBadIdentityFile)
	}
	return dev, person, nil
}
