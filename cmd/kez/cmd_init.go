package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"slices"
	"strings"

	"github.com/kez-lat/kez-chat/kez"
)

// randSource supplies the entropy of new identities and the positions of the
// recall check. Tests replace it with a fixed stream; nothing else may.
var randSource io.Reader = rand.Reader

func init() {
	register(&command{
		name:    "init",
		args:    "[--words-file F] [--yes] [--force [--discard-handle HANDLE]] [--home DIR] [--passphrase-file F]",
		summary: "make a new identity and its 24-word paper backup",
		help: `
Makes a new identity: one key that is your KEZ identity, your NATS login
and your peer-to-peer address, derived from 24 words. The words are shown
once. They are the only way to recover the identity: there is no reset and
no copy on any server. Write them down, in order, and keep them offline.

Then init asks for three of the words, at random positions, and saves the
identity only when they are right (after three wrong answers it shows the
words again). --yes skips that check, for scripts.

With --words-file F the words are written to F (mode 0600, never over an
existing file) instead of being printed; copy them onto paper.

The identity is saved in the state folder. It is encrypted with a
passphrase if one is given: --passphrase-file F (a file whose first line is
the passphrase), else KEZ_PASSPHRASE_FILE, else KEZ_PASSPHRASE, else, on a
terminal, you type one twice (for none, leave it empty and then type
"unencrypted"). Without a passphrase the file is stored unencrypted,
readable only by you (mode 0600), and init says so. Commands that need the
identity later read the same passphrase sources. "kez passphrase" encrypts
an existing identity or changes its passphrase; init is not for that.

init refuses to replace an existing identity unless --force is given. A
new identity is a new key: if the old one holds a handle (as the profile
or, when a sig-server is known, its sigchain says), the handle stays with
the old key, and init --force refuses unless you name that handle with
--discard-handle HANDLE, or type it when asked on a terminal.`,
		flags: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			var o initOptions
			fs.StringVar(&o.wordsFile, "words-file", "", "write the 24 words to this new file (mode 0600) instead of printing them")
			fs.BoolVar(&o.yes, "yes", false, "skip the recall check (for scripts)")
			fs.BoolVar(&o.force, "force", false, "replace an existing identity with a new key (its words are then the only way back to it)")
			declareDiscardHandle(fs, &o.discardHandle)
			fs.StringVar(&o.home, "home", "", homeFlagHelp)
			fs.StringVar(&o.passFile, "passphrase-file", "", "encrypt the identity with the passphrase in this file (env KEZ_PASSPHRASE_FILE; or KEZ_PASSPHRASE)")
			return func(ctx context.Context, args []string) error {
				if len(args) > 0 {
					return usagef("init takes no arguments, got %q", args)
				}
				return runInit(ctx, e, o)
			}
		},
	})
}

type initOptions struct {
	wordsFile, home, passFile, discardHandle string
	yes, force                               bool
}

func runInit(ctx context.Context, e *env, o initOptions) (err error) {
	home, err := e.home(o.home)
	if err != nil {
		return err
	}
	if o.discardHandle != "" && !o.force {
		return usagef("--discard-handle goes with --force")
	}
	in := bufio.NewReader(e.stdin)
	if dev, err := kez.HasDevice(home); err != nil {
		return err
	} else if dev {
		return fmt.Errorf("%s holds a device key: this install is a device of a person already (\"kez id\" shows whose), and init would make another person here; use another --home for a new identity", home)
	}
	exists, err := kez.HasIdentity(home)
	if err != nil {
		return err
	}
	if exists && !o.force {
		return fmt.Errorf("an identity already exists in %s (\"kez id\" shows it); \"kez passphrase set\" encrypts it or changes its passphrase. init makes a new key, and replaces this one only with --force", home)
	}
	var prof *profile
	if exists {
		if prof, err = loadProfile(home); err != nil {
			return err
		}
		held, err := handleAtRisk(ctx, e, home, prof, serverFlags{}, nil)
		if err != nil {
			return err
		}
		if err := confirmDiscard(e, in, home, held, o.discardHandle, "kez init --force"); err != nil {
			return err
		}
	}
	if o.wordsFile != "" {
		if _, err := os.Lstat(o.wordsFile); err == nil {
			return fmt.Errorf("%s already exists; name a new file, so that no backup is overwritten", o.wordsFile)
		}
	}
	pass, err := newPassphrase(e, in, o.passFile)
	if err != nil {
		return err
	}

	entropy := make([]byte, 32)
	if _, err := io.ReadFull(randSource, entropy); err != nil {
		return fmt.Errorf("reading randomness: %w", err)
	}
	m, err := kez.MnemonicFromEntropy(entropy)
	if err != nil {
		return err
	}
	id, err := kez.FromMnemonic(m)
	if err != nil {
		return err
	}
	words := m.Words()

	if o.wordsFile != "" {
		if err := writeWordsFile(o.wordsFile, id, words); err != nil {
			return err
		}
		defer func() {
			if err != nil { // nothing was saved: leave no orphan backup behind
				os.Remove(o.wordsFile)
			}
		}()
		fmt.Fprintf(e.stdout, "Wrote your 24 words to %s (mode 0600).\nCopy them onto paper and keep them offline: they are the only way to recover this identity.\n", o.wordsFile)
	} else {
		fmt.Fprintf(e.stdout, "Your paper backup: 24 words. Write them down, in order, and keep them offline.\nThey are the only way to recover this identity: there is no reset and no copy on any server.\n\n%s\n", formatWords(words))
	}

	if !o.yes {
		if e.isTerminal && o.wordsFile == "" {
			if _, err := askLine(e.stdout, in, "When they are written down, press Enter."); err != nil {
				return errRecallUnfinished
			}
			fmt.Fprint(e.stdout, "\033[2J\033[3J\033[H") // clear the screen and scrollback
		}
		if err := checkRecall(e, in, words); err != nil {
			return err
		}
	}

	var opts []kez.SaveOption
	if o.force {
		opts = append(opts, kez.Overwrite())
	}
	opts = append(opts, kez.WithScryptWorkFactor(scryptWorkFactor))
	if err := kez.SaveIdentity(home, id, pass, opts...); err != nil {
		return err
	}
	if prof != nil {
		if err := forgetHandle(home, prof); err != nil {
			return err
		}
	}
	fmt.Fprintf(e.stdout, "\nIdentity saved in %s, %s.\n\n", kez.IdentityPath(home), storageNote(pass != nil))
	printIdentity(e.stdout, "", id.PublicKey())
	fmt.Fprintln(e.stdout, "\nNext: \"kez register NAME\" claims a handle for it.")
	return nil
}

var errRecallUnfinished = errors.New("the recall check was not finished, so nothing was saved; run \"kez init\" again (scripts: --yes)")

// recallTries is how many wrong answers a round of the recall check allows
// before the words are shown again.
const recallTries = 3

// checkRecall asks for three words at random positions until all three are
// answered right. After recallTries wrong answers it shows the words again
// and starts a new round with new positions. It fails only when the input
// ends.
func checkRecall(e *env, in *bufio.Reader, words []string) error {
	var seed [32]byte
	if _, err := io.ReadFull(randSource, seed[:]); err != nil {
		return fmt.Errorf("reading randomness: %w", err)
	}
	r := mrand.New(mrand.NewChaCha8(seed))
	fmt.Fprintln(e.stdout, "Now show that you have them: type the word asked for, then Enter.")
	for {
		positions := r.Perm(len(words))[:3]
		slices.Sort(positions)
		misses := 0
	round:
		for _, p := range positions {
			for {
				line, err := askLine(e.stdout, in, "Word #%d: ", p+1)
				if err != nil && line == "" {
					fmt.Fprintln(e.stdout)
					return errRecallUnfinished
				}
				if strings.ToLower(strings.TrimSpace(line)) == words[p] {
					break
				}
				misses++
				if misses >= recallTries {
					break round
				}
				fmt.Fprintf(e.stdout, "That is not word #%d; look again (%d more tries).\n", p+1, recallTries-misses)
			}
		}
		if misses < recallTries {
			fmt.Fprintln(e.stdout, "Right.")
			return nil
		}
		fmt.Fprintf(e.stdout, "\n%d wrong answers. Here are your words again:\n\n%s\n", recallTries, formatWords(words))
	}
}

// writeWordsFile writes the backup to a new file, mode 0600, synced.
func writeWordsFile(path string, id *kez.Identity, words []string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("writing the words: %w", err)
	}
	text := fmt.Sprintf("# KEZ paper backup for %s\n# Keep it secret and offline: these words are the identity.\n# Restore with: kez recover --words-file FILE\n\n%s", id.PublicKey(), formatWords(words))
	_, err = f.WriteString(text)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("writing the words: %w", err)
	}
	return nil
}

// printHandle prints the handle line of "kez id".
func printHandle(w io.Writer, handle string) {
	if handle == "" {
		fmt.Fprintln(w, "handle:       (none yet: run \"kez register NAME\")")
	} else {
		fmt.Fprintf(w, "handle:       @%s\n", handle)
	}
}

// printIdentity prints the human form of "kez id".
func printIdentity(w io.Writer, handle string, k kez.PublicKey) {
	printHandle(w, handle)
	fmt.Fprintf(w, "key:          %s\npeer id:      %s\nfingerprint:  %s\n", k, k.PeerID(), k.Fingerprint())
}
