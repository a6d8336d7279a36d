package kez

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"filippo.io/age"
)

// IdentityFileName is the name of the identity file inside a state folder.
const IdentityFileName = "identity"

// Identity file errors. Callers branch on them with errors.Is; the returned
// errors wrap them with the path and what to do.
var (
	// ErrNoIdentity: the folder holds no identity file yet.
	ErrNoIdentity = errors.New("kez: no identity in this folder yet")
	// ErrIdentityExists: SaveIdentity was asked not to overwrite one.
	ErrIdentityExists = errors.New("kez: an identity already exists in this folder")
	// ErrPassphraseRequired: the file is encrypted and no passphrase was given.
	ErrPassphraseRequired = errors.New("kez: the identity file is encrypted; a passphrase is required")
	// ErrWrongPassphrase: the passphrase does not open the file (or the
	// part of the file that protects the key is damaged).
	ErrWrongPassphrase = errors.New("kez: wrong passphrase for the identity file")
	// ErrBadIdentityFile: the file is not a KEZ identity file, or is damaged
	// or truncated.
	ErrBadIdentityFile = errors.New("kez: bad identity file")
	// ErrInsecurePermissions: the file can be read or written by other users.
	ErrInsecurePermissions = errors.New("kez: the identity file is open to other users")
)

const (
	plainHeader = "kez-identity/v1\n"
	ageHeader   = "age-encryption.org/v1\n"
	// maxIdentityFile bounds what is read: a v1 file is under 1 KiB.
	maxIdentityFile = 16 << 10
	// DefaultScryptWorkFactor is the scrypt work factor (log2 N) used to
	// encrypt an identity file: about a second and 256 MiB of memory.
	DefaultScryptWorkFactor = 18
	// maxScryptWorkFactor is the largest work factor LoadIdentity accepts.
	maxScryptWorkFactor = 22
)

// SaveOption changes how [SaveIdentity] writes.
type SaveOption func(*saveConfig)

type saveConfig struct {
	overwrite  bool
	workFactor int
}

// Overwrite lets [SaveIdentity] replace an existing identity file.
func Overwrite() SaveOption { return func(c *saveConfig) { c.overwrite = true } }

// WithScryptWorkFactor sets the scrypt work factor (log2 N, 1 to 22) used
// when a passphrase is given; the default is [DefaultScryptWorkFactor].
// Lower values are for tests.
func WithScryptWorkFactor(logN int) SaveOption {
	return func(c *saveConfig) { c.workFactor = logN }
}

// IdentityPath returns the path of the identity file in dir.
func IdentityPath(dir string) string { return filepath.Join(dir, IdentityFileName) }

// HasIdentity reports whether dir holds an identity file.
func HasIdentity(dir string) (bool, error) {
	_, err := os.Lstat(IdentityPath(dir))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("kez: checking for an identity: %w", err)
	}
	return true, nil
}

// SaveIdentity writes id to dir/identity, creating dir (mode 0700) if
// needed. Only the 64-byte seed is stored. With a non-empty passphrase the
// file is an age file encrypted with an scrypt recipient; without one it is
// plain text, protected only by its mode 0600. The file is written to a
// temporary file in dir, synced, then renamed into place, so a crash leaves
// either the old file or the new one.
//
// An existing identity is never replaced unless [Overwrite] is given; the
// error then wraps [ErrIdentityExists]. The format is in
// docs/spec/identity.md.
func SaveIdentity(dir string, id *Identity, passphrase []byte, opts ...SaveOption) error {
	cfg := saveConfig{workFactor: DefaultScryptWorkFactor}
	for _, o := range opts {
		o(&cfg)
	}
	data, err := encodeIdentityFile(id, passphrase, cfg.workFactor)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("kez: making the state folder: %w", err)
	}
	path := IdentityPath(dir)
	if !cfg.overwrite {
		if ok, err := HasIdentity(dir); err != nil {
			return err
		} else if ok {
			return fmt.Errorf("%w (%s); keep it, or replace it on purpose", ErrIdentityExists, path)
		}
	}
	return writeFileAtomic(path, data, cfg.overwrite, ErrIdentityExists)
}

// writeFileAtomic writes data to path with mode 0600 through a synced
// temporary file in the same folder. Without overwrite it links the
// temporary file into place, which fails if path exists even when another
// process races us; the error then wraps exists.
func writeFileAtomic(path string, data []byte, overwrite bool, exists error) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("kez: writing %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(0o600); err != nil && runtime.GOOS != "windows" {
		return fmt.Errorf("kez: writing %s: %w", path, err)
	}
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("kez: writing %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("kez: writing %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("kez: writing %s: %w", path, err)
	}
	if overwrite {
		err = os.Rename(tmp, path)
	} else {
		err = os.Link(tmp, path)
		if errors.Is(err, fs.ErrExist) {
			err = fmt.Errorf("%w (%s)", exists, path)
		} else if err != nil {
			// Hard links are not available everywhere; fall back to a rename,
			// re-checking for a file first.
			if _, serr := os.Lstat(path); serr == nil {
				err = fmt.Errorf("%w (%s)", exists, path)
			} else {
				err = os.Rename(tmp, path)
			}
		} else {
			os.Remove(tmp)
		}
	}
	if err != nil {
		if !errors.Is(err, exists) {
			err = fmt.Errorf("kez: writing %s: %w", path, err)
		}
		return err
	}
	syncDir(dir)
	return nil
}

// syncDir makes a rename durable. Failure is ignored: not every system can
// sync a folder, and the file itself is already synced.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// LoadIdentity reads the identity in dir. The passphrase is needed only for
// an encrypted file (a plain file ignores it). Errors wrap
// [ErrNoIdentity], [ErrPassphraseRequired], [ErrWrongPassphrase],
// [ErrBadIdentityFile] or [ErrInsecurePermissions] (a file that other users
// can read or write is refused, as ssh does, with the chmod to run).
func LoadIdentity(dir string, passphrase []byte) (*Identity, error) {
	path := IdentityPath(dir)
	data, err := readKeyFile(path, "identity")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w (%s)", ErrNoIdentity, dir)
	}
	if err != nil {
		return nil, err
	}
	id, err := DecodeIdentityFile(data, passphrase)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, path)
	}
	return id, nil
}

// readKeyFile reads a file holding a private key (an identity or a device
// file, named by what in errors): a regular file, open to its owner only,
// of at most maxIdentityFile bytes (one more is read, so the decoder can
// tell). A missing file is an error wrapping fs.ErrNotExist.
func readKeyFile(path, what string) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("kez: reading the %s: %w", what, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("kez: reading the %s: %w", what, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrBadIdentityFile, path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 && runtime.GOOS != "windows" {
		return nil, fmt.Errorf("%w: %s has mode %04o; run: chmod 600 %s", ErrInsecurePermissions, path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxIdentityFile+1))
	if err != nil {
		return nil, fmt.Errorf("kez: reading the %s: %w", what, err)
	}
	return data, nil
}

// EncodeIdentityFile returns the bytes of an identity file (see
// [SaveIdentity]) for callers that keep it somewhere other than a folder.
// workFactor is the scrypt log2 N, used only with a passphrase; 0 means
// [DefaultScryptWorkFactor].
func EncodeIdentityFile(id *Identity, passphrase []byte, workFactor int) ([]byte, error) {
	if workFactor == 0 {
		workFactor = DefaultScryptWorkFactor
	}
	return encodeIdentityFile(id, passphrase, workFactor)
}

func encodeIdentityFile(id *Identity, passphrase []byte, workFactor int) ([]byte, error) {
	if id == nil || len(id.seed) != 64 {
		return nil, errors.New("kez: no identity to save")
	}
	return encryptIfAsked(encodePlain(id), passphrase, workFactor)
}

// encryptIfAsked returns plain as it is without a passphrase, else an age
// file encrypted to one scrypt recipient with that passphrase.
func encryptIfAsked(plain, passphrase []byte, workFactor int) ([]byte, error) {
	if len(passphrase) == 0 {
		return plain, nil
	}
	if workFactor < 1 || workFactor > maxScryptWorkFactor {
		return nil, fmt.Errorf("kez: scrypt work factor must be 1 to %d, got %d", maxScryptWorkFactor, workFactor)
	}
	r, err := age.NewScryptRecipient(string(passphrase))
	if err != nil {
		return nil, fmt.Errorf("kez: encrypting the key file: %w", err)
	}
	r.SetWorkFactor(workFactor)
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, r)
	if err != nil {
		return nil, fmt.Errorf("kez: encrypting the key file: %w", err)
	}
	if _, err := w.Write(plain); err != nil {
		return nil, fmt.Errorf("kez: encrypting the key file: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("kez: encrypting the key file: %w", err)
	}
	return buf.Bytes(), nil
}

// encodePlain is the v1 plain form: a header line, the public key (a check
// on the seed) and the seed.
func encodePlain(id *Identity) []byte {
	var b bytes.Buffer
	b.WriteString(plainHeader)
	b.WriteString("key: " + id.pub.String() + "\n")
	b.WriteString("seed: " + base64.StdEncoding.EncodeToString(id.seed) + "\n")
	return b.Bytes()
}

// DecodeIdentityFile parses the bytes of an identity file. It is the
// decoder [LoadIdentity] uses, without the file-system checks. Errors wrap
// [ErrPassphraseRequired], [ErrWrongPassphrase] or [ErrBadIdentityFile].
func DecodeIdentityFile(data, passphrase []byte) (*Identity, error) {
	return decodeIdentityFile(data, passphrase, maxScryptWorkFactor)
}

// decodeIdentityFile is DecodeIdentityFile with a bound on the scrypt work
// factor it will run (fuzzing uses a small one).
func decodeIdentityFile(data, passphrase []byte, maxWorkFactor int) (*Identity, error) {
	plain, err := openKeyFile(data, passphrase, maxWorkFactor, plainHeader, "identity")
	if err != nil {
		return nil, err
	}
	return decodePlain(plain)
}

// openKeyFile returns the plain form of a key file whose plain form starts
// with header (what names the kind of file in errors): data itself, or
// the payload of an age file encrypted with passphrase.
func openKeyFile(data, passphrase []byte, maxWorkFactor int, header, what string) ([]byte, error) {
	if len(data) > maxIdentityFile {
		return nil, fmt.Errorf("%w: larger than %d bytes, so not %s file", ErrBadIdentityFile, maxIdentityFile, article(what))
	}
	version, _, _ := strings.Cut(header, "/")
	switch {
	case bytes.HasPrefix(data, []byte(header)):
		return data, nil
	case bytes.HasPrefix(data, []byte(ageHeader)):
		plain, err := decryptAge(data, passphrase, maxWorkFactor)
		if err != nil {
			return nil, err
		}
		if !bytes.HasPrefix(plain, []byte(header)) {
			return nil, fmt.Errorf("%w: an age file that does not hold a KEZ %s", ErrBadIdentityFile, what)
		}
		return plain, nil
	case len(data) == 0:
		return nil, fmt.Errorf("%w: the file is empty", ErrBadIdentityFile)
	case bytes.HasPrefix([]byte(header), data) || bytes.HasPrefix([]byte(ageHeader), data):
		return nil, fmt.Errorf("%w: the file is truncated", ErrBadIdentityFile)
	case bytes.HasPrefix(data, []byte(version+"/")):
		return nil, fmt.Errorf("%w: %s file of an unknown version (%q), written by a newer version", ErrBadIdentityFile, article(what), firstLine(data))
	default:
		return nil, fmt.Errorf("%w: not a KEZ %s file (it starts with %q)", ErrBadIdentityFile, what, firstLine(data))
	}
}

// article puts "a" or "an" before what.
func article(what string) string {
	if strings.ContainsRune("aeiou", rune(what[0])) {
		return "an " + what
	}
	return "a " + what
}

func firstLine(b []byte) string {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	}
	return truncate(string(b), 40)
}

func decodePlain(data []byte) (*Identity, error) {
	id, rest, err := decodeKeyLines(data[len(plainHeader):])
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%w: unexpected text after the seed line", ErrBadIdentityFile)
	}
	return id, nil
}

// decodeKeyLines parses the "key: " and "seed: " lines that follow the
// header of a key file, and returns the identity and what follows them.
func decodeKeyLines(rest []byte) (*Identity, []byte, error) {
	keyLine, rest, ok1 := bytes.Cut(rest, []byte("\n"))
	seedLine, rest, ok2 := bytes.Cut(rest, []byte("\n"))
	if !ok1 || !ok2 {
		return nil, nil, fmt.Errorf("%w: the file is truncated", ErrBadIdentityFile)
	}
	keyText, ok1 := bytes.CutPrefix(keyLine, []byte("key: "))
	seedText, ok2 := bytes.CutPrefix(seedLine, []byte("seed: "))
	if !ok1 || !ok2 {
		return nil, nil, fmt.Errorf("%w: want a \"key: \" line then a \"seed: \" line", ErrBadIdentityFile)
	}
	key, err := ParsePublicKey(string(keyText))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: damaged key line: %w", ErrBadIdentityFile, err)
	}
	seed, err := base64.StdEncoding.Strict().DecodeString(string(seedText))
	if err != nil || len(seed) != 64 {
		return nil, nil, fmt.Errorf("%w: damaged seed line (want 64 bytes in base64)", ErrBadIdentityFile)
	}
	id, err := fromSeed(seed)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrBadIdentityFile, err)
	}
	if id.pub != key {
		return nil, nil, fmt.Errorf("%w: damaged: the seed does not give the recorded key %s", ErrBadIdentityFile, key)
	}
	return id, rest, nil
}

// probeIdentity lets age parse a header without doing any key work, to tell
// a passphrase file from one encrypted to a key.
type probeIdentity struct{}

func (probeIdentity) Unwrap([]*age.Stanza) ([]byte, error) { return nil, age.ErrIncorrectIdentity }

// decryptAge opens an age file encrypted with a passphrase and returns its
// payload (at most maxIdentityFile bytes are read).
func decryptAge(data, passphrase []byte, maxWorkFactor int) ([]byte, error) {
	_, err := age.Decrypt(bytes.NewReader(data), probeIdentity{})
	var nomatch *age.NoIdentityMatchError
	if !errors.As(err, &nomatch) {
		return nil, fmt.Errorf("%w: damaged encrypted header: %w", ErrBadIdentityFile, err)
	}
	if len(nomatch.StanzaTypes) != 1 || nomatch.StanzaTypes[0] != "scrypt" {
		return nil, fmt.Errorf("%w: an age file not encrypted with a passphrase (recipients %q)", ErrBadIdentityFile, nomatch.StanzaTypes)
	}
	if len(passphrase) == 0 {
		return nil, ErrPassphraseRequired
	}
	sid, err := age.NewScryptIdentity(string(passphrase))
	if err != nil {
		return nil, fmt.Errorf("kez: %w", err)
	}
	sid.SetMaxWorkFactor(maxWorkFactor)
	r, err := age.Decrypt(bytes.NewReader(data), sid)
	if errors.As(err, &nomatch) {
		return nil, ErrWrongPassphrase
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadIdentityFile, err)
	}
	plain, err := io.ReadAll(io.LimitReader(r, maxIdentityFile))
	if err != nil {
		return nil, fmt.Errorf("%w: damaged or truncated: %w", ErrBadIdentityFile, err)
	}
	return plain, nil
}
