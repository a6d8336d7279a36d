package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/kez-lat/kez-chat/kez"
)

func init() {
	register(&command{
		name:    "recover",
		args:    "[--words-file F] [--force] [--home DIR] [--passphrase-file F]",
		summary: "restore your identity from its 24 words",
		help: `
Restores an identity from its 24-word paper backup: the same words give the
same key on any machine. The words are read from --words-file F, else from
standard input (on a terminal: type them, numbered or not, in any case, then
an empty line). A misspelt word is named by its position, with suggestions;
nothing is saved until all 24 words and their checksum are right.

The passphrase that encrypts the identity on this machine comes from the
same sources as for "kez init" (--passphrase-file, KEZ_PASSPHRASE_FILE,
KEZ_PASSPHRASE, or a prompt on a terminal); without one the file is stored
unencrypted with mode 0600.

recover refuses to replace an existing identity unless --force is given.`,
		flags: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			var wordsFile, home, passFile string
			var force bool
			fs.StringVar(&wordsFile, "words-file", "", "read the words from this file instead of standard input")
			fs.BoolVar(&force, "force", false, "replace an existing identity")
			fs.StringVar(&home, "home", "", homeFlagHelp)
			fs.StringVar(&passFile, "passphrase-file", "", "encrypt the identity with the passphrase in this file (env KEZ_PASSPHRASE_FILE; or KEZ_PASSPHRASE)")
			return func(ctx context.Context, args []string) error {
				if len(args) > 0 {
					return usagef("recover takes no arguments (give the words on standard input or with --words-file), got %d", len(args))
				}
				return runRecover(e, wordsFile, home, passFile, force)
			}
		},
	})
}

// maxWordsInput bounds what recover reads; kez.ParseMnemonic refuses more
// than 4096 bytes anyway.
const maxWordsInput = 8 << 10

func runRecover(e *env, wordsFile, homeFlag, passFile string, force bool) error {
	home, err := e.home(homeFlag)
	if err != nil {
		return err
	}
	if exists, err := kez.HasIdentity(home); err != nil {
		return err
	} else if exists && !force {
		return fmt.Errorf("an identity already exists in %s (\"kez id\" shows it); to replace it with the one from your words, run \"kez recover --force\"", home)
	}
	var m kez.Mnemonic
	if wordsFile != "" {
		b, err := readSmallFile(wordsFile, maxWordsInput)
		if err != nil {
			return fmt.Errorf("reading the words: %w", err)
		}
		m, err = kez.ParseMnemonic(string(b))
		if err != nil {
			return wordsError(err)
		}
	} else {
		if m, err = readWords(e); err != nil {
			return err
		}
	}
	id, err := kez.FromMnemonic(m)
	if err != nil {
		return err
	}
	pass, err := newPassphrase(e, passFile)
	if err != nil {
		return err
	}
	opts := []kez.SaveOption{kez.WithScryptWorkFactor(scryptWorkFactor)}
	if force {
		opts = append(opts, kez.Overwrite())
	}
	if err := kez.SaveIdentity(home, id, pass, opts...); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "Restored your identity in %s, %s.\n\n", kez.IdentityPath(home), storageNote(pass != nil))
	prof, err := loadProfile(home)
	if err != nil {
		return err
	}
	printIdentity(e.stdout, prof.handleFor(id.PublicKey()), id.PublicKey())
	return nil
}

// readWords reads the words from standard input line by line until there
// are 24 (or more), the input ends, or, on a terminal, an empty line follows
// some words.
func readWords(e *env) (kez.Mnemonic, error) {
	if e.isTerminal {
		fmt.Fprintln(e.stderr, "Type your 24 words (numbered or not), then Enter on an empty line:")
	}
	in := bufio.NewReader(e.stdin)
	var text strings.Builder
	for {
		line, err := in.ReadString('\n')
		text.WriteString(line)
		m, perr := kez.ParseMnemonic(text.String())
		var wc *kez.WordCountError
		if errors.As(perr, &wc) && wc.Got < kez.MnemonicWords && err == nil && text.Len() <= maxWordsInput {
			// On a terminal an empty line ends the input early (the count
			// error then says how many words are missing); elsewhere only
			// the end of the input does.
			if !e.isTerminal || strings.TrimSpace(line) != "" || wc.Got == 0 {
				continue // more words to come
			}
		}
		if perr != nil {
			return kez.Mnemonic{}, wordsError(perr)
		}
		return m, nil
	}
}

// wordsError turns a parse error into advice; nothing has been saved.
func wordsError(err error) error {
	return worded(err, "%s; nothing was saved", (*env)(nil).sentence(err))
}
