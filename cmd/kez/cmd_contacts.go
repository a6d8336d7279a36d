package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/kez-lat/kez-chat/chat"
)

func init() {
	register(&command{
		name:    "contacts",
		args:    "(add HANDLE | list [--json] | verify HANDLE FINGERPRINT) [--server URL] [--sig-server URL] [--home DIR] [--verbose]",
		summary: "pin, list and verify the people you talk to",
		help: `
kez contacts add HANDLE
    Resolves HANDLE, fetches and verifies the key's whole sigchain on this
    machine, and pins the key, the chain and the encryption key. Messages
    are only sent to contacts, and only to the pinned key: if the handle
    later names another key, or the sig-server rewrites the chain, kez
    warns loudly, holds their messages and refuses to send until you add
    the contact again — which is how you accept the change, after checking
    the new fingerprint with them.

kez contacts list [--json]
    Shows every contact: handle, fingerprint, and whether you verified it
    or it is flagged. --json prints [{"handle","key","fingerprint",
    "verified","flag","flag_detail","generation","added_at"}].

kez contacts verify HANDLE FINGERPRINT
    Compare fingerprints in person or by voice: they read theirs ("kez id"),
    you type it here (spaces optional). A match marks the contact verified;
    a mismatch changes nothing and is an error you should not ignore.`,
		flags: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			var cf chatFlags
			var asJSON bool
			cf.declare(fs, false)
			fs.BoolVar(&asJSON, "json", false, "print JSON (list)")
			return func(ctx context.Context, args []string) error {
				if len(args) == 0 {
					return usagef("contacts needs add, list or verify")
				}
				if asJSON && (args[0] == "add" || args[0] == "verify") {
					return usagef("--json is for contacts list only")
				}
				switch sub, rest := args[0], args[1:]; sub {
				case "add":
					if len(rest) != 1 {
						return usagef("contacts add takes one HANDLE")
					}
					return runContactsAdd(ctx, e, cf, rest[0])
				case "list":
					if len(rest) != 0 {
						return usagef("contacts list takes no arguments")
					}
					return runContactsList(ctx, e, cf, asJSON)
				case "verify":
					if len(rest) < 2 {
						return usagef("contacts verify takes a HANDLE and the FINGERPRINT they read to you")
					}
					return runContactsVerify(ctx, e, cf, rest[0], strings.Join(rest[1:], " "))
				default:
					return usagef("no contacts subcommand %q: use add, list or verify", sub)
				}
			}
		},
	})
}

func runContactsAdd(ctx context.Context, e *env, cf chatFlags, handle string) error {
	c, err := e.openChat(ctx, cf, false)
	if err != nil {
		return err
	}
	defer c.Close()
	old, _ := c.Contact(ctx, handle)
	ct, err := c.AddContact(ctx, handle)
	if err != nil {
		return aboutHandle(handle, err)
	}
	switch {
	case old == nil:
		fmt.Fprintf(e.stdout, "Added @%s.\n", ct.Handle)
	case old.Key != ct.Key:
		fmt.Fprintf(e.stdout, "WARNING: you accepted a NEW KEY for @%s.\n  old key: %s\n  old fingerprint: %s\n", ct.Handle, old.Key, old.Fingerprint())
	case old.Flag != chat.FlagNone:
		fmt.Fprintf(e.stdout, "You accepted the rewritten sigchain of @%s (%s).\n", ct.Handle, old.FlagDetail)
	default:
		fmt.Fprintf(e.stdout, "@%s is already a contact; its pin is up to date.\n", ct.Handle)
	}
	fmt.Fprintf(e.stdout, "  key:         %s\n  fingerprint: %s\n", ct.Key, ct.Fingerprint())
	if !ct.Verified() {
		// The command carries a placeholder, not the fingerprint: one
		// pasted from here would "verify" whatever key was pinned.
		name, _, _ := strings.Cut(ct.Handle, "@")
		fmt.Fprintf(e.stdout, "Ask them to read you their fingerprint (kez id) and compare it with the one above; if it matches, run:\n  kez contacts verify %s \"<the fingerprint %s reads to you>\"\n", ct.Handle, name)
	}
	return nil
}

// contactJSON is one contact in "kez contacts list --json"; fields may be
// added.
type contactJSON struct {
	Handle      string    `json:"handle"`
	Key         string    `json:"key"`
	Fingerprint string    `json:"fingerprint"`
	Verified    bool      `json:"verified"`
	Flag        string    `json:"flag"`
	FlagDetail  string    `json:"flag_detail"`
	Generation  uint32    `json:"generation"`
	AddedAt     time.Time `json:"added_at"`
}

func runContactsList(ctx context.Context, e *env, cf chatFlags, asJSON bool) error {
	c, err := e.openLocalChat(ctx, cf)
	if err != nil {
		return err
	}
	defer c.Close()
	list, err := c.Contacts(ctx)
	if err != nil {
		return err
	}
	if asJSON {
		out := make([]contactJSON, 0, len(list))
		for _, ct := range list {
			out = append(out, contactJSON{
				Handle: ct.Handle, Key: ct.Key.String(), Fingerprint: ct.Fingerprint(), Verified: ct.Verified(),
				Flag: string(ct.Flag), FlagDetail: ct.FlagDetail, Generation: ct.Generation, AddedAt: ct.AddedAt.UTC(),
			})
		}
		return json.NewEncoder(e.stdout).Encode(out)
	}
	printContacts(e.stdout, list)
	return nil
}

func printContacts(w io.Writer, list []*chat.Contact) {
	if len(list) == 0 {
		fmt.Fprintln(w, "No contacts yet: kez contacts add HANDLE")
		return
	}
	width := 0
	for _, ct := range list {
		width = max(width, len(ct.Handle)+1)
	}
	for _, ct := range list {
		status := "not verified"
		switch {
		case ct.Flag == chat.FlagKeyChanged:
			status = "KEY CHANGED: messages held, sending refused"
		case ct.Flag == chat.FlagChainRewritten:
			status = "CHAIN REWRITTEN: messages held, sending refused"
		case ct.Verified():
			status = "verified"
		}
		fmt.Fprintf(w, "%-*s  %s  %s\n", width, "@"+ct.Handle, ct.Fingerprint(), status)
	}
}

func runContactsVerify(ctx context.Context, e *env, cf chatFlags, handle, fingerprint string) error {
	c, err := e.openChat(ctx, cf, false)
	if err != nil {
		return err
	}
	defer c.Close()
	ct, err := c.VerifyContact(ctx, handle, fingerprint)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "@%s is verified: the fingerprint matches their pinned key.\n", ct.Handle)
	return nil
}
