package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
)

func init() {
	register(&command{
		name:    "id",
		args:    "[--json] [--home DIR]",
		summary: "show your handle, key, PeerID and fingerprint",
		help: `
Shows who you are: your handle (once "kez register" has claimed one), your
key (the NATS user nkey, "U…"), your fingerprint, the six groups of digits
a contact compares with you to verify your key, and this install's libp2p
PeerID (the one "kez serve" listens as). On an install with a device key of
its own (made by "kez link" or "kez recover") it also shows that device
key, and the PeerID is the device's.

--json prints {"handle","key","peer_id","fingerprint","device"} (handle is
"" until you register; device is the key this install logs in with, key
itself on the install "kez init" made; peer_id is the device's).

An encrypted identity needs its passphrase: KEZ_PASSPHRASE_FILE,
KEZ_PASSPHRASE, or a prompt on a terminal.`,
		flags: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			var home string
			var asJSON bool
			fs.BoolVar(&asJSON, "json", false, "print JSON")
			fs.StringVar(&home, "home", "", homeFlagHelp)
			return func(ctx context.Context, args []string) error {
				if len(args) > 0 {
					return usagef("id takes no arguments, got %q", args)
				}
				return runID(e, home, asJSON)
			}
		},
	})
}

// idJSON is the --json output of "kez id" (docs/cli.md); fields may be added.
type idJSON struct {
	Handle      string `json:"handle"`
	Key         string `json:"key"`
	PeerID      string `json:"peer_id"` // this install's libp2p PeerID: the device's
	Fingerprint string `json:"fingerprint"`
	Device      string `json:"device"` // the key this install logs in with (key itself on the install made by "kez init")
}

func runID(e *env, homeFlag string, asJSON bool) error {
	acct, err := e.loadAccount(homeFlag)
	if err != nil {
		return err
	}
	k := acct.person
	handle := acct.prof.handleFor(k)
	dev := acct.device().PublicKey()
	if asJSON {
		out := idJSON{Handle: handle, Key: k.String(), PeerID: dev.PeerID().String(), Fingerprint: k.Fingerprint(), Device: dev.String()}
		return json.NewEncoder(e.stdout).Encode(out)
	}
	if dev == k {
		printIdentity(e.stdout, handle, k)
		return nil
	}
	printHandle(e.stdout, handle)
	holds := "it also holds your primary key"
	if acct.id == nil {
		holds = "it does not hold your primary key"
	}
	fmt.Fprintf(e.stdout, "key:          %s\nfingerprint:  %s\ndevice key:   %s (this install's own; %s)\npeer id:      %s (this device's)\n",
		k, k.Fingerprint(), dev, holds, dev.PeerID())
	return nil
}
