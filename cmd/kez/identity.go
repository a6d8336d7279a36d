package main

// Shared helpers for commands that need the user's identity or local
// profile: loadIdentity (with passphrase handling), the passphrase sources,
// and the profile store (KEZ_HOME/profile.json).

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/term"

	"github.com/kez-lat/kez-chat/kez"
)

// scryptWorkFactor is the scrypt cost used to encrypt the identity file.
// Tests lower it; everyone else keeps kez's default.
var scryptWorkFactor = kez.DefaultScryptWorkFactor

// loadIdentity loads the identity in home. A plain file needs nothing; an
// encrypted one takes its passphrase from KEZ_PASSPHRASE_FILE,
// KEZ_PASSPHRASE or, on a terminal, a prompt (three tries). Errors are
// sentences that say what to do, ready to return from a command; they still
// match kez.ErrNoIdentity and the other sentinels with errors.Is.
func loadIdentity(e *env, home string) (*kez.Identity, error) {
	pass, err := passphraseFromEnv(e, "")
	if err != nil {
		return nil, err
	}
	id, err := kez.LoadIdentity(home, pass)
	if errors.Is(err, kez.ErrPassphraseRequired) && e.isTerminal {
		for try := 0; try < 3; try++ {
			pass, err = readSecret(e, fmt.Sprintf("Passphrase for the identity in %s: ", home))
			if err != nil {
				return nil, err
			}
			id, err = kez.LoadIdentity(home, pass)
			if !errors.Is(err, kez.ErrWrongPassphrase) {
				break
			}
			fmt.Fprintln(e.stderr, "That passphrase does not open it.")
		}
	}
	if err != nil {
		return nil, explainLoadError(home, err)
	}
	return id, nil
}

// explainLoadError words a kez.LoadIdentity error with the folder it
// is about. The result still matches the kez sentinels with errors.Is.
func explainLoadError(home string, err error) error {
	path := kez.IdentityPath(home)
	switch {
	case errors.Is(err, kez.ErrNoIdentity):
		return worded(err, "no identity in %s yet: run \"kez init\" to make one, or \"kez recover\" to restore yours from its 24 words", home)
	case errors.Is(err, kez.ErrPassphraseRequired):
		return worded(err, "the identity in %s is encrypted: set KEZ_PASSPHRASE_FILE (a file holding the passphrase) or KEZ_PASSPHRASE, or run on a terminal to be asked", home)
	case errors.Is(err, kez.ErrWrongPassphrase):
		return worded(err, "wrong passphrase for %s (if it is right, the file is damaged: restore it with \"kez recover --force\")", path)
	case errors.Is(err, kez.ErrInsecurePermissions):
		return worded(err, "%s can be read or changed by other users of this machine: run chmod 600 %s, and make a new identity if you do not trust them", path, path)
	case errors.Is(err, kez.ErrBadIdentityFile):
		return worded(err, "%s is not a KEZ identity file, or it is damaged: restore it from your words with \"kez recover --force\"", path)
	}
	return err
}

// passphraseFromEnv returns the passphrase given without asking: the file
// named by fileFlag, else by KEZ_PASSPHRASE_FILE, else KEZ_PASSPHRASE. It
// returns nil if none is set.
func passphraseFromEnv(e *env, fileFlag string) ([]byte, error) {
	if f := e.envOr(fileFlag, "KEZ_PASSPHRASE_FILE"); f != "" {
		return readPassphraseFile(f)
	}
	if p := e.getenv("KEZ_PASSPHRASE"); p != "" {
		return []byte(p), nil
	}
	return nil, nil
}

// readPassphraseFile returns the first line of the file f, which must not
// be empty.
func readPassphraseFile(f string) ([]byte, error) {
	b, err := readSmallFile(f, 1024)
	if err != nil {
		return nil, fmt.Errorf("reading the passphrase file: %w", err)
	}
	b, _, _ = bytes.Cut(b, []byte("\n")) // the first line
	b = bytes.TrimSuffix(b, []byte("\r"))
	if len(b) == 0 {
		return nil, fmt.Errorf("the passphrase file %s is empty", f)
	}
	return b, nil
}

// newPassphrase decides the passphrase for a new identity file: one given
// by flag or environment, else (on a terminal) one typed twice, or none if
// the user then says so explicitly, else none. in reads that answer.
func newPassphrase(e *env, in *bufio.Reader, fileFlag string) ([]byte, error) {
	p, err := passphraseFromEnv(e, fileFlag)
	if err != nil || p != nil || !e.isTerminal {
		return p, err
	}
	fmt.Fprintln(e.stderr, "Choose a passphrase to encrypt your identity on this machine.")
	return askNewPassphrase(e, in)
}

// confirmUnencrypted is what the user types to store an identity without a
// passphrase; an empty line alone never does.
const confirmUnencrypted = "unencrypted"

// askNewPassphrase asks on the terminal for a new passphrase, typed twice.
// An empty one means none only if the user then types confirmUnencrypted
// (read from in); with in nil an empty one is refused and asked again.
func askNewPassphrase(e *env, in *bufio.Reader) ([]byte, error) {
	for {
		p, err := readSecret(e, "Passphrase: ")
		if err != nil {
			return nil, err
		}
		if len(p) == 0 {
			if in == nil {
				fmt.Fprintln(e.stderr, "A passphrase cannot be empty here (\"kez passphrase remove\" stores the identity unencrypted).")
				continue
			}
			line, err := askLine(e.stderr, in, "No passphrase? Then the identity is stored unencrypted, protected only by file mode 0600.\nType %q to store it so, or just Enter to choose a passphrase: ", confirmUnencrypted)
			if err != nil && line == "" {
				fmt.Fprintln(e.stderr)
				return nil, errors.New("no passphrase was chosen, so nothing was saved")
			}
			if strings.EqualFold(strings.TrimSpace(line), confirmUnencrypted) {
				return nil, nil
			}
			continue
		}
		again, err := readSecret(e, "Same passphrase again: ")
		if err != nil {
			return nil, err
		}
		if bytes.Equal(p, again) {
			return p, nil
		}
		fmt.Fprintln(e.stderr, "The two do not match; try again.")
	}
}

// readSecret asks for a line on the terminal without echoing it. The prompt
// goes to stderr so that stdout stays clean for --json.
var readSecret = func(e *env, prompt string) ([]byte, error) {
	f, ok := e.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil, errors.New("no terminal to ask for a passphrase on: set KEZ_PASSPHRASE_FILE or KEZ_PASSPHRASE")
	}
	fd := int(f.Fd())
	state, err := term.GetState(fd)
	if err != nil {
		return nil, fmt.Errorf("reading the passphrase: %w", err)
	}
	b, err := interruptible(func() { fmt.Fprint(e.stderr, prompt) }, func() ([]byte, error) { return term.ReadPassword(fd) })
	if errors.Is(err, errInterrupted) {
		term.Restore(fd, state) // ReadPassword turned echo off
	}
	fmt.Fprintln(e.stderr)
	if err != nil {
		return nil, fmt.Errorf("reading the passphrase: %w", err)
	}
	return b, nil
}

// storageNote says how the identity is protected at rest.
func storageNote(encrypted bool) string {
	if encrypted {
		return "encrypted with your passphrase"
	}
	return "NOT encrypted (protected only by file mode 0600); to encrypt it, run \"kez passphrase set\""
}

func readSmallFile(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, max)
	}
	return b, nil
}

// profile is the local, non-secret state of a client: the handle the user
// registered and the servers they use. It lives in KEZ_HOME/profile.json
// and is written by "kez register"; a missing file is an empty profile.
type profile struct {
	// Key is the identity the handle was registered for. A handle whose key
	// is not the current identity's is ignored (the identity was replaced).
	Key       string `json:"key,omitempty"`
	Handle    string `json:"handle,omitempty"`     // canonical "alice@kez.lat"
	Domain    string `json:"domain,omitempty"`     // the home server's domain
	Server    string `json:"server,omitempty"`     // chat-server base URL
	SigServer string `json:"sig_server,omitempty"` // sig-server base URL
	// NeedsDevice: "kez recover" restored the primary key of a person
	// whose sigchain exists, but could not make this install a device of
	// its own; until it is one, it does not log in (it would read the
	// primary device's queue).
	NeedsDevice bool `json:"needs_device,omitempty"`
}

const profileFileName = "profile.json"

// loadProfile reads home/profile.json; a missing file gives an empty
// profile.
func loadProfile(home string) (*profile, error) {
	path := filepath.Join(home, profileFileName)
	b, err := readSmallFile(path, 64<<10)
	if errors.Is(err, os.ErrNotExist) {
		return &profile{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the profile: %w", err)
	}
	var p profile
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("the profile %s is damaged (%v); fix or delete it, then run \"kez register\" again", path, err)
	}
	return &p, nil
}

// account is what most commands load first: the state folder, the keys
// in it and its profile. An install made by "kez init" holds the person's
// primary key (id) and uses it as its device (dev nil); one made by "kez
// recover" holds id and a device key of its own (dev); one made by "kez
// link" holds only its device key (id nil).
type account struct {
	home   string
	id     *kez.Identity // the primary key, or nil on a linked device
	dev    *kez.Identity // this install's own device key, or nil: id is
	person kez.PublicKey // the person's primary key
	prof   *profile
}

// device returns the key this install logs in with.
func (a *account) device() *kez.Identity {
	if a.dev != nil {
		return a.dev
	}
	return a.id
}

// primary returns the primary key, or an error worded for a command that
// needs it (what) on an install that only holds a device key.
func (a *account) primary(what string) (*kez.Identity, error) {
	if a.id == nil {
		return nil, fmt.Errorf("this install is a linked device of %s and does not hold your primary key: %s needs it; run it on the install made by \"kez init\" or \"kez recover\"", a.who(), what)
	}
	return a.id, nil
}

// who names the person: their handle, else their key.
func (a *account) who() string {
	if h := a.prof.handleFor(a.person); h != "" {
		return "@" + h
	}
	return a.person.String()
}

// loadAccount settles the state folder (flag, KEZ_HOME, default) and loads
// the keys (asking for their passphrase if needed) and the profile.
func (e *env) loadAccount(homeFlag string) (*account, error) {
	home, err := e.home(homeFlag)
	if err != nil {
		return nil, err
	}
	a := &account{home: home}
	hasDev, err := kez.HasDevice(home)
	if err != nil {
		return nil, err
	}
	var pass []byte
	if hasDev {
		if a.dev, a.person, pass, err = loadDevice(e, home); err != nil {
			return nil, err
		}
	}
	hasID, err := kez.HasIdentity(home)
	if err != nil {
		return nil, err
	}
	if hasID || !hasDev {
		if pass != nil {
			a.id, err = kez.LoadIdentity(home, pass)
			if err != nil && !errors.Is(err, kez.ErrWrongPassphrase) {
				return nil, explainLoadError(home, err)
			}
		}
		if a.id == nil {
			if a.id, err = loadIdentity(e, home); err != nil {
				return nil, err
			}
		}
		if !hasDev {
			a.person = a.id.PublicKey()
		} else if a.person != a.id.PublicKey() {
			return nil, fmt.Errorf("the device key in %s belongs to %s, but the identity beside it is %s: one of the two files is not this install's", home, a.person, a.id.PublicKey())
		}
	}
	if a.prof, err = loadProfile(home); err != nil {
		return nil, err
	}
	return a, nil
}

// loadDevice loads the device file in home as loadIdentity loads the
// identity, and returns the passphrase that opened it (nil for a plain
// file), which opens the identity beside it too.
func loadDevice(e *env, home string) (*kez.Identity, kez.PublicKey, []byte, error) {
	pass, err := passphraseFromEnv(e, "")
	if err != nil {
		return nil, kez.PublicKey{}, nil, err
	}
	dev, person, err := kez.LoadDevice(home, pass)
	if errors.Is(err, kez.ErrPassphraseRequired) && e.isTerminal {
		for try := 0; try < 3; try++ {
			pass, err = readSecret(e, fmt.Sprintf("Passphrase for the keys in %s: ", home))
			if err != nil {
				return nil, kez.PublicKey{}, nil, err
			}
			dev, person, err = kez.LoadDevice(home, pass)
			if !errors.Is(err, kez.ErrWrongPassphrase) {
				break
			}
			fmt.Fprintln(e.stderr, "That passphrase does not open it.")
		}
	}
	if err != nil {
		return nil, kez.PublicKey{}, nil, explainDeviceError(home, err)
	}
	return dev, person, pass, nil
}

// explainDeviceError words a kez.LoadDevice error as explainLoadError
// words the identity's.
func explainDeviceError(home string, err error) error {
	path := kez.DevicePath(home)
	switch {
	case errors.Is(err, kez.ErrPassphraseRequired):
		return worded(err, "the device key in %s is encrypted: set KEZ_PASSPHRASE_FILE (a file holding the passphrase) or KEZ_PASSPHRASE, or run on a terminal to be asked", home)
	case errors.Is(err, kez.ErrWrongPassphrase):
		return worded(err, "wrong passphrase for %s", path)
	case errors.Is(err, kez.ErrInsecurePermissions):
		return worded(err, "%s can be read or changed by other users of this machine: run chmod 600 %s, and revoke this device (\"kez devices revoke\") if you do not trust them", path, path)
	case errors.Is(err, kez.ErrBadIdentityFile):
		return worded(err, "%s is not a KEZ device key, or it is damaged: revoke this device from another one (\"kez devices revoke\") and link this install again", path)
	}
	return err
}

// handleFor returns the profile's handle if it belongs to key, else "".
func (p *profile) handleFor(key kez.PublicKey) string {
	if p.Key != key.String() {
		return ""
	}
	return p.Handle
}

// saveProfile writes home/profile.json atomically with mode 0600.
func saveProfile(home string, p *profile) error {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(home, 0o700); err != nil {
		return fmt.Errorf("making the state folder: %w", err)
	}
	f, err := os.CreateTemp(home, ".profile.json.tmp-*")
	if err != nil {
		return fmt.Errorf("writing the profile: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(home, profileFileName))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing the profile: %w", err)
	}
	return nil
}

// homeFlagHelp is the help text of every command's --home flag.
const homeFlagHelp = "state folder (env KEZ_HOME; default: the user config folder + /kez)"

// formatWords lays the 24 words out numbered, four to a row, so they are
// easy to copy onto paper in order.
func formatWords(words []string) string {
	var b strings.Builder
	for row := 0; row*4 < len(words); row++ {
		var line strings.Builder
		for i := row * 4; i < row*4+4 && i < len(words); i++ {
			fmt.Fprintf(&line, "%2d. %-8s   ", i+1, words[i])
		}
		b.WriteString(strings.TrimRight(line.String(), " ") + "\n")
	}
	return b.String()
}
