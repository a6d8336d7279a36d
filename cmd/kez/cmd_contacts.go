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
	"github.com/kez-lat/kez-chat/kez"
)

func init() {
	register(&command{
		name:    "contacts",
		args:    "(add HANDLE | list [--json] | verify HANDLE [NUMBER] [--json]) [--server URL] [--sig-server URL] [--home DIR] [--verbose]",
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
    or it is flagged; under it, the latest devices its sigchain added or
    revoked since you pinned it (news, not a warning: their key signed
    them). --json prints [{"handle","key","fingerprint","verified","flag",
    "flag_detail","generation","added_at","device_events":[{"at","device",
    "name","revoked","seqno"}]}].

kez contacts verify HANDLE
    Shows the safety number of your key and the key pinned for HANDLE:
    60 digits that they see too, on their side, with "kez contacts verify"
    and your handle. Compare them in person or on a call you trust.

kez contacts verify HANDLE NUMBER
    Checks the number they read to you (spaces optional) and, if it
    matches, marks the contact verified. Their fingerprint ("kez id" on
    their side, 30 digits) is accepted too. A mismatch changes nothing, does
    not show the number it expected, and is an error you should not ignore:
    someone may be between you.

    --json prints {"handle","key","fingerprint","safety_number","verified"}
    (verify only).`,
		flags: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			var cf chatFlags
			var asJSON bool
			cf.declare(fs, false)
			fs.BoolVar(&asJSON, "json", false, "print JSON (list, verify)")
			return func(ctx context.Context, args []string) error {
				if len(args) == 0 {
					return usagef("contacts needs add, list or verify")
				}
				if asJSON && args[0] == "add" {
					return usagef("--json is for contacts list and verify only")
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
					if len(rest) < 1 {
						return usagef("contacts verify takes a HANDLE, then the NUMBER they read to you")
					}
					return runContactsVerify(ctx, e, cf, rest[0], strings.Join(rest[1:], " "), asJSON)
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
		// No digits to paste: verifying is comparing with what they read.
		fmt.Fprintf(e.stdout, "Before you trust this contact, compare keys with them: \"kez contacts verify %s\" shows the safety number you both see.\n", ct.Handle)
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
	// DeviceEvents are the devices its chain added or revoked since it
	// was pinned, oldest first.
	DeviceEvents []deviceEventJSON `json:"device_events"`
}

// deviceEventJSON is a contact's device added or revoked, as kez found it.
type deviceEventJSON struct {
	At      time.Time `json:"at"`
	Device  string    `json:"device"`
	Name    string    `json:"name"`
	Revoked bool      `json:"revoked"`
	Seqno   uint64    `json:"seqno"`
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
	events := make(map[string][]chat.ContactDevice, len(list))
	for _, ct := range list {
		if events[ct.Handle], err = c.ContactDeviceEvents(ctx, ct.Handle); err != nil {
			return err
		}
	}
	if asJSON {
		out := make([]contactJSON, 0, len(list))
		for _, ct := range list {
			j := contactJSON{
				Handle: ct.Handle, Key: ct.Key.String(), Fingerprint: ct.Fingerprint(), Verified: ct.Verified(),
				Flag: string(ct.Flag), FlagDetail: ct.FlagDetail, Generation: ct.Generation, AddedAt: ct.AddedAt.UTC(),
				DeviceEvents: []deviceEventJSON{},
			}
			for _, d := range events[ct.Handle] {
				j.DeviceEvents = append(j.DeviceEvents, deviceEventJSON{At: d.At.UTC(), Device: d.Device.String(), Name: d.Name, Revoked: d.Revoked, Seqno: d.Seqno})
			}
			out = append(out, j)
		}
		return json.NewEncoder(e.stdout).Encode(out)
	}
	printContacts(e.stdout, list, events)
	return nil
}

// maxDeviceNews is how many of a contact's latest device events "kez
// contacts list" shows.
const maxDeviceNews = 3

func printContacts(w io.Writer, list []*chat.Contact, events map[string][]chat.ContactDevice) {
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
		// A device their key added or revoked: news, not a warning.
		evs := events[ct.Handle]
		if n := len(evs) - maxDeviceNews; n > 0 {
			fmt.Fprintf(w, "    (%d earlier device changes: kez contacts list --json)\n", n)
			evs = evs[n:]
		}
		for _, d := range evs {
			fmt.Fprintf(w, "    %s %s\n", d.At.Local().Format("2006-01-02 15:04"), d)
		}
	}
}

// contactVerifyJSON is the --json output of "kez contacts verify"; fields
// may be added.
type contactVerifyJSON struct {
	Handle       string `json:"handle"`
	Key          string `json:"key"`
	Fingerprint  string `json:"fingerprint"`
	SafetyNumber string `json:"safety_number"`
	Verified     bool   `json:"verified"`
}

// runContactsVerify shows the safety number of the user's key and the
// contact's (typed is empty), or checks what the contact read out (their
// safety number or fingerprint) and marks the contact verified. A mismatch
// never shows the expected digits, which could be copied back in.
func runContactsVerify(ctx context.Context, e *env, cf chatFlags, handle, typed string, asJSON bool) error {
	c, err := e.openChat(ctx, cf, false)
	if err != nil {
		return err
	}
	defer c.Close()
	var ct *chat.Contact
	if typed == "" {
		if ct, err = c.Contact(ctx, handle); err == nil {
			err = ct.Err()
		}
	} else {
		n := 0
		for _, r := range typed {
			if r >= '0' && r <= '9' {
				n++
			}
		}
		if n != 30 && n != 60 {
			return fmt.Errorf("you typed %d digits, but a safety number has 60 (a fingerprint 30): type all of what they read to you; nothing was changed", n)
		}
		ct, err = c.VerifyContact(ctx, handle, typed)
	}
	if err != nil {
		return aboutHandle(handle, err)
	}
	out := contactVerifyJSON{Handle: ct.Handle, Key: ct.Key.String(), Fingerprint: ct.Fingerprint(), SafetyNumber: kez.SafetyNumber(c.Key(), ct.Key), Verified: ct.Verified()}
	switch {
	case asJSON:
		return json.NewEncoder(e.stdout).Encode(out)
	case typed != "":
		fmt.Fprintf(e.stdout, "@%s is verified: the number matches their key as pinned here.\n", ct.Handle)
		return nil
	}
	mine := "YOUR-HANDLE"
	if home, err := e.home(cf.home); err == nil {
		if prof, err := loadProfile(home); err == nil && prof.handleFor(c.Key()) != "" {
			mine = prof.handleFor(c.Key())
		}
	}
	name, _, _ := strings.Cut(ct.Handle, "@")
	fmt.Fprintf(e.stdout, "Safety number of your key and @%s's:\n\n%s\n", ct.Handle, indentRows(out.SafetyNumber, 4))
	fmt.Fprintf(e.stdout, "%s sees the same number with \"kez contacts verify %s\". Compare them in person or on a call you trust;\n", name, mine)
	fmt.Fprintf(e.stdout, "when %s reads theirs to you, type it: kez contacts verify %s \"<the number %s reads>\"\n", name, ct.Handle, name)
	if ct.Verified() {
		fmt.Fprintf(e.stdout, "You verified @%s on %s.\n", ct.Handle, ct.VerifiedAt.Local().Format("2 January 2006"))
	}
	return nil
}

// indentRows lays out space-separated groups n to a row, each row indented.
func indentRows(groups string, n int) string {
	f := strings.Fields(groups)
	var b strings.Builder
	for i := 0; i < len(f); i += n {
		b.WriteString("    " + strings.Join(f[i:min(i+n, len(f))], " ") + "\n")
	}
	return b.String()
}
