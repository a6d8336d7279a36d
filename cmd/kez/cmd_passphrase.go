package main

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"github.com/kez-lat/kez-chat/kez"
)

func init() {
	register(&command{
		name:    "passphrase",
		args:    "(set | change | remove) [--new-passphrase-file F] [--home DIR]",
		summary: "encrypt your identity, change its passphrase or remove it",
		help: `
Changes how the identity is stored on this machine, never the identity
itself: the key, its handle and its 24 words stay the same.

kez passphrase set      (or: kez passphrase change)
    Encrypts the identity with a new passphrase: a plain one is encrypted,
    an encrypted one gets the new passphrase instead of the old. The new
    passphrase comes from --new-passphrase-file F (a file whose first line
    is it), else, on a terminal, you type it twice.

kez passphrase remove
    Stores the identity unencrypted, readable only by you (mode 0600).

An encrypted identity is opened first with its current passphrase:
KEZ_PASSPHRASE_FILE, KEZ_PASSPHRASE, or a prompt on a terminal. The file is
replaced in one step: a crash leaves the old file or the new one.`,
		flags: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			var home, newFile string
			fs.StringVar(&home, "home", "", homeFlagHelp)
			fs.StringVar(&newFile, "new-passphrase-file", "", "set: the new passphrase is the first line of this file")
			return func(ctx context.Context, args []string) error {
				if len(args) != 1 {
					return usagef("passphrase takes one of set, change or remove")
				}
				switch args[0] {
				case "set", "change":
					return runPassphraseSet(e, home, newFile)
				case "remove":
					if newFile != "" {
						return usagef("passphrase remove takes no --new-passphrase-file")
					}
					return runPassphraseRemove(e, home)
				default:
					return usagef("no passphrase subcommand %q: use set, change or remove", args[0])
				}
			}
		},
	})
}

func runPassphraseSet(e *env, homeFlag, newFile string) error {
	acct, err := e.loadAccount(homeFlag)
	if err != nil {
		return err
	}
	var pass []byte
	switch {
	case newFile != "":
		if pass, err = readPassphraseFile(newFile); err != nil {
			return err
		}
	case e.isTerminal:
		if pass, err = askNewPassphrase(e, nil); err != nil {
			return err
		}
	default:
		return errors.New("no new passphrase: give it in a file with --new-passphrase-file F, or run on a terminal to type it")
	}
	return resave(e, acct, pass)
}

func runPassphraseRemove(e *env, homeFlag string) error {
	acct, err := e.loadAccount(homeFlag)
	if err != nil {
		return err
	}
	return resave(e, acct, nil)
}

// resave writes the loaded identity again with pass (nil: unencrypted),
// replacing the file in one step.
func resave(e *env, acct *account, pass []byte) error {
	if acct.dev != nil {
		// The device key first: a failure between the two leaves the
		// identity as it was, and the device key under the new
		// passphrase, which the next run asks for.
		err := kez.SaveDevice(acct.home, acct.dev, acct.person, pass, kez.Overwrite(), kez.WithScryptWorkFactor(scryptWorkFactor))
		if err != nil {
			return worded(err, "could not save the device key in %s, so the old file is unchanged: %v", kez.DevicePath(acct.home), err)
		}
		fmt.Fprintf(e.stdout, "The device key in %s is now %s.\n", kez.DevicePath(acct.home), storageNote(pass != nil))
	}
	if acct.id == nil {
		return nil
	}
	err := kez.SaveIdentity(acct.home, acct.id, pass, kez.Overwrite(), kez.WithScryptWorkFactor(scryptWorkFactor))
	if err != nil {
		return worded(err, "could not save the identity in %s, so the old file is unchanged: %v", kez.IdentityPath(acct.home), err)
	}
	fmt.Fprintf(e.stdout, "The identity in %s is now %s.\nIts key, handle and 24 words are unchanged.\n", kez.IdentityPath(acct.home), storageNote(pass != nil))
	return nil
}
