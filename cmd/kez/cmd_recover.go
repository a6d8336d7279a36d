package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

func init() {
	register(&command{
		name:    "recover",
		args:    "[--words-file F] [--force [--discard-handle HANDLE]] [--name NAME] [--home DIR] [--passphrase-file F] [--server URL] [--sig-server URL]",
		summary: "restore your identity from its 24 words",
		help: `
Restores an identity from its 24-word paper backup: the same words give the
same key on any machine. The words are read from --words-file F, else from
standard input. On a terminal, type them in order (numbered or not, in any
case, several on a line if you like), then Enter on an empty line: a word
that is not a backup word is named with suggestions and asked again on its
own, and if the checksum does not match you can correct any word by its
number. Nothing is saved until all 24 words and their checksum are right.

Only then is the passphrase that encrypts the identity on this machine
asked for: from the same sources as for "kez init" (--passphrase-file,
KEZ_PASSPHRASE_FILE, KEZ_PASSPHRASE), else, on a terminal, typed twice (for
none, leave it empty and then type "unencrypted").

Then recover looks for the handle the key holds: the handle its sigchain
names at the sig-server, if the handle's registry gives it to this key.
The handle and the servers go into the profile, as "kez register" leaves
them. The servers are --server and --sig-server, else KEZ_SERVER and
KEZ_SIG_SERVER, else the profile's; without any, recover says how to
restore the handle later.

If your sigchain exists, this install then becomes a new device of yours:
it makes a device key of its own, which your primary key certifies with
an add_device link (--name names it, default: the host name), registered
at your chat-server. It logs in with that key and has an inbox of its own,
so it never takes the messages of your other devices. Your contacts and
history are not on it: run "kez devices sync NAME" (NAME: this device's)
on another of your devices to send them. If that cannot be done now (the
servers do not answer), it does not log in until "kez recover --force"
is run again.

recover refuses to replace an existing identity unless --force is given;
if that identity is another key that holds a handle, it also wants that
handle named (--discard-handle HANDLE, or typed on a terminal).`,
		flags: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			var o recoverOptions
			fs.StringVar(&o.wordsFile, "words-file", "", "read the words from this file instead of standard input")
			fs.BoolVar(&o.force, "force", false, "replace an existing identity")
			declareDiscardHandle(fs, &o.discardHandle)
			fs.StringVar(&o.name, "name", "", "this device's name (default: the host name)")
			fs.StringVar(&o.home, "home", "", homeFlagHelp)
			fs.StringVar(&o.passFile, "passphrase-file", "", "encrypt the identity with the passphrase in this file (env KEZ_PASSPHRASE_FILE; or KEZ_PASSPHRASE)")
			o.sf.declare(fs)
			return func(ctx context.Context, args []string) error {
				if len(args) > 0 {
					return usagef("recover takes no arguments (give the words on standard input or with --words-file), got %d", len(args))
				}
				return runRecover(ctx, e, o)
			}
		},
	})
}

type recoverOptions struct {
	wordsFile, home, passFile, discardHandle, name string
	force                                          bool
	sf                                             serverFlags
}

// maxWordsInput bounds what recover reads; kez.ParseMnemonic refuses more
// than 4096 bytes anyway.
const maxWordsInput = 8 << 10

func runRecover(ctx context.Context, e *env, o recoverOptions) error {
	home, err := e.home(o.home)
	if err != nil {
		return err
	}
	if o.discardHandle != "" && !o.force {
		return usagef("--discard-handle goes with --force")
	}
	exists, err := kez.HasIdentity(home)
	if err != nil {
		return err
	}
	if dev, err := kez.HasDevice(home); err != nil {
		return err
	} else if dev && !exists {
		return fmt.Errorf("%s holds the device key of a linked install: recover restores an identity in a folder of its own (use another --home)", home)
	}
	if exists && !o.force {
		return fmt.Errorf("an identity already exists in %s (\"kez id\" shows it); to replace it with the one from your words, run \"kez recover --force\"", home)
	}
	prof, err := loadProfile(home)
	if err != nil {
		return err
	}
	in := bufio.NewReader(e.stdin)
	var m kez.Mnemonic
	switch {
	case o.wordsFile != "":
		b, err := readSmallFile(o.wordsFile, maxWordsInput)
		if err != nil {
			return fmt.Errorf("reading the words: %w", err)
		}
		if m, err = kez.ParseMnemonic(string(b)); err != nil {
			return wordsError(err)
		}
	case e.isTerminal:
		if m, err = askWords(e, in); err != nil {
			return err
		}
	default:
		if m, err = readWords(in); err != nil {
			return err
		}
	}
	id, err := kez.FromMnemonic(m)
	if err != nil {
		return err
	}
	key := id.PublicKey()
	if exists {
		held, err := handleAtRisk(ctx, e, home, prof, o.sf, &key)
		if err != nil {
			return err
		}
		if err := confirmDiscard(e, in, home, held, o.discardHandle, "kez recover --force with these words"); err != nil {
			return err
		}
	}
	pass, err := newPassphrase(e, in, o.passFile)
	if err != nil {
		return err
	}
	opts := []kez.SaveOption{kez.WithScryptWorkFactor(scryptWorkFactor)}
	if o.force {
		opts = append(opts, kez.Overwrite())
	}
	if err := kez.SaveIdentity(home, id, pass, opts...); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "Restored your identity in %s, %s.\n\n", kez.IdentityPath(home), storageNote(pass != nil))
	if prof.Key != "" && prof.Key != key.String() {
		if err := forgetHandle(home, prof); err != nil {
			return err
		}
	}
	handle := prof.handleFor(key)
	if handle == "" {
		handle = restoreHandle(ctx, e, home, prof, o.sf, key)
	}
	printIdentity(e.stdout, handle, key)
	return makeOwnDevice(ctx, e, home, id, pass, o)
}

// makeOwnDevice makes a restored install a new device of its person,
// with a device key of its own certified by an add_device link, so that
// it never logs in as the primary key (whose queue another install may
// read). A person without a sigchain yet needs none: the install is their
// primary device, as after "kez init".
func makeOwnDevice(ctx context.Context, e *env, home string, id *kez.Identity, pass []byte, o recoverOptions) error {
	prof, err := loadProfile(home)
	if err != nil {
		return err
	}
	// What cannot be done now is said, not failed: the identity is
	// restored; the install only does not log in until it is a device.
	fail := func(why string) error {
		prof.NeedsDevice = true
		if err := saveProfile(home, prof); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "\nThis install could not be made a device of its own (%s), so it does not log in yet: it would take the messages of your other install. Run \"kez recover --force\" with your words again once your servers answer.\n", why)
		return nil
	}
	srv, err := e.settleServers(ctx, o.sf, prof, false)
	if err != nil {
		return fail(e.sentence(err))
	}
	if srv.sigServer == "" {
		return fail("no server is known here: give --server URL or set KEZ_SERVER")
	}
	sc := &sigchain.Client{BaseURL: srv.sigServer, HTTPClient: httpClient}
	st, err := sc.FetchVerified(ctx, id.PublicKey(), nil)
	if errors.Is(err, sigchain.ErrNotFound) {
		return nil // no chain: this install is the primary device
	}
	if err != nil {
		return fail("reading your sigchain: " + e.sentence(err))
	}
	dev, req, err := newDeviceKey(e, o.name)
	if err != nil {
		return err
	}
	name := req.Name()
	l, err := sigchain.NewLink(id, st, sigchain.TypeAddDevice, sigchain.AddDeviceBody(req), e.clock())
	if err != nil {
		return fail("certifying the device: " + e.sentence(err))
	}
	if _, _, err := (&handles.Client{BaseURL: srv.server, HTTPClient: httpClient}).RegisterDevice(ctx, l.Bytes()); err != nil {
		return fail("registering it at the chat-server: " + e.sentence(err))
	}
	if err := sc.Append(ctx, l); err != nil {
		return fail("adding it to your sigchain: " + e.sentence(err))
	}
	if err := kez.SaveDevice(home, dev, id.PublicKey(), pass, kez.Overwrite(), kez.WithScryptWorkFactor(scryptWorkFactor)); err != nil {
		return err
	}
	if prof.NeedsDevice {
		prof.NeedsDevice = false
		if err := saveProfile(home, prof); err != nil {
			return err
		}
	}
	fmt.Fprintf(e.stdout, "\nThis install is a new device of yours, %q (key fingerprint %s): it has its own inbox and never reads another device's.\nYour contacts and history are not on it yet: run \"kez devices sync %s\" on your other device to send them here, then \"kez inbox\" here takes them.\n", name, dev.PublicKey().Fingerprint(), name)
	return nil
}

// restoreHandle finds the handle key holds (findHandle) and writes it
// with its servers to the profile, as "kez register" would. It returns the
// handle, or "" after saying why none was restored.
func restoreHandle(ctx context.Context, e *env, home string, prof *profile, sf serverFlags, key kez.PublicKey) string {
	hl := findHandle(ctx, e, prof, sf, key)
	if hl.handle.IsZero() {
		if hl.note != "" {
			fmt.Fprintf(e.stdout, "%s\n\n", hl.note)
		}
		return ""
	}
	h := hl.handle
	prof.Key, prof.Handle, prof.Domain = key.String(), h.String(), h.Domain
	if h.Domain == hl.srv.domain {
		prof.Server, prof.SigServer = hl.srv.server, hl.srv.sigServer
	}
	if err := saveProfile(home, prof); err != nil {
		fmt.Fprintf(e.stdout, "Your handle is %s, but the profile could not be written (%v); \"kez register %s\" writes it.\n\n", h.Display(), err, h.Name)
		return h.String()
	}
	fmt.Fprintf(e.stdout, "Found your handle: your sigchain at %s names %s and its registry confirms it.\n\n", hl.srv.sigServer, h.Display())
	return h.String()
}

// readWords reads the words from a pipe or file on standard input, line by
// line, until there are 24 (or more) or the input ends.
func readWords(in *bufio.Reader) (kez.Mnemonic, error) {
	var text strings.Builder
	for {
		line, err := in.ReadString('\n')
		text.WriteString(line)
		m, perr := kez.ParseMnemonic(text.String())
		var wc *kez.WordCountError
		if errors.As(perr, &wc) && wc.Got < kez.MnemonicWords && err == nil && text.Len() <= maxWordsInput {
			continue // more words to come
		}
		if perr != nil {
			return kez.Mnemonic{}, wordsError(perr)
		}
		return m, nil
	}
}

// errWordsUnfinished ends an interactive recovery whose input ended.
var errWordsUnfinished = errors.New("the words were not finished, so nothing was saved")

// askWords takes the words from a person at a terminal. Each word is
// checked as it comes; one that is not a backup word is asked again on its
// own. The words end with an empty line once there are 24 (an empty line
// before that says how many are missing). If the checksum then fails, any
// word can be corrected by its number. Prompts go to stderr.
func askWords(e *env, in *bufio.Reader) (kez.Mnemonic, error) {
	fmt.Fprintf(e.stderr, "Type your %d words in order (numbered or not, several on a line if you like), then Enter on an empty line.\n", kez.MnemonicWords)
	var words []string
	for {
		prompt := fmt.Sprintf("word %d: ", len(words)+1)
		if len(words) == kez.MnemonicWords {
			prompt = fmt.Sprintf("That is %d words; Enter to go on: ", kez.MnemonicWords)
		}
		line, err := askLine(e.stderr, in, "%s", prompt)
		if err != nil && line == "" {
			fmt.Fprintln(e.stderr)
			return kez.Mnemonic{}, errWordsUnfinished
		}
		got := kez.SplitMnemonic(line)
		if len(got) == 0 {
			if len(words) == kez.MnemonicWords {
				return checkWords(e, in, words)
			}
			if len(words) > 0 {
				fmt.Fprintf(e.stderr, "That is %d words; a backup has %d. Go on with word %d.\n", len(words), kez.MnemonicWords, len(words)+1)
			}
			continue
		}
		for i, w := range got {
			if len(words) == kez.MnemonicWords {
				fmt.Fprintf(e.stderr, "A backup has %d words: %d more ignored.\n", kez.MnemonicWords, len(got)-i)
				break
			}
			if !kez.IsWord(w) {
				if w, err = askWord(e, in, len(words)+1, w); err != nil {
					return kez.Mnemonic{}, err
				}
			}
			words = append(words, w)
		}
	}
}

// askWord asks for word number pos again until it is a backup word.
func askWord(e *env, in *bufio.Reader, pos int, bad string) (string, error) {
	for {
		if bad != "" {
			fmt.Fprintf(e.stderr, "Word %d (%q) is not a backup word", pos, cutForEcho(bad))
			if s := kez.SuggestWords(bad, 3); len(s) > 0 {
				fmt.Fprintf(e.stderr, "; did you mean %s?", strings.Join(s, ", "))
			}
			fmt.Fprintln(e.stderr)
		}
		line, err := askLine(e.stderr, in, "word %d again: ", pos)
		if err != nil && line == "" {
			fmt.Fprintln(e.stderr)
			return "", errWordsUnfinished
		}
		switch got := kez.SplitMnemonic(line); {
		case len(got) == 1 && kez.IsWord(got[0]):
			return got[0], nil
		case len(got) > 1:
			fmt.Fprintln(e.stderr, "One word, please.")
			bad = ""
		default:
			bad = strings.TrimSpace(line)
		}
	}
}

// checkWords parses 24 valid words. If their checksum fails it shows them
// and lets the user correct words by number until it matches; an empty
// answer gives up.
func checkWords(e *env, in *bufio.Reader, words []string) (kez.Mnemonic, error) {
	for {
		m, err := kez.ParseMnemonic(strings.Join(words, " "))
		if !errors.Is(err, kez.ErrChecksum) {
			if err != nil {
				return kez.Mnemonic{}, wordsError(err)
			}
			return m, nil
		}
		fmt.Fprintf(e.stderr, "All %d are backup words, but their checksum does not match: usually two words swapped, or one written in place of another.\nCompare them with your paper:\n\n%s\n", kez.MnemonicWords, formatWords(words))
		for {
			line, err := askLine(e.stderr, in, "Number of a word to correct (1-%d), or Enter to stop: ", kez.MnemonicWords)
			line = strings.TrimSpace(line)
			if line == "" {
				if err != nil {
					fmt.Fprintln(e.stderr)
				}
				return kez.Mnemonic{}, errors.New("the words do not match their checksum, so nothing was saved; check them against your paper backup")
			}
			n, perr := strconv.Atoi(strings.TrimSuffix(line, "."))
			if perr != nil || n < 1 || n > kez.MnemonicWords {
				continue
			}
			w, err := askLine(e.stderr, in, "word %d (now %q): ", n, words[n-1])
			got := kez.SplitMnemonic(w)
			if err != nil && w == "" {
				fmt.Fprintln(e.stderr)
				return kez.Mnemonic{}, errWordsUnfinished
			}
			if len(got) != 1 {
				continue
			}
			if !kez.IsWord(got[0]) {
				if got[0], err = askWord(e, in, n, got[0]); err != nil {
					return kez.Mnemonic{}, err
				}
			}
			words[n-1] = got[0]
			break
		}
	}
}

// cutForEcho shortens what a prompt repeats of a typed word.
func cutForEcho(s string) string {
	if r := []rune(s); len(r) > 32 {
		return string(r[:32]) + "…"
	}
	return s
}

// wordsError turns a parse error into advice; nothing has been saved.
func wordsError(err error) error {
	return worded(err, "%s; nothing was saved", (*env)(nil).sentence(err))
}
