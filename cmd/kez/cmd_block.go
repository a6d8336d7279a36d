package main

import (
	"context"
	"flag"
	"fmt"
	"slices"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/kez"
)

func init() {
	register(&command{
		name:    "block",
		args:    "(HANDLE|KEY | --list) [--server URL] [--sig-server URL] [--home DIR] [--verbose]",
		summary: "drop everything a person sends you",
		help: `
kez block HANDLE|KEY
    Blocks a person, a stranger or a contact: from now on everything they
    send you, from any of their devices, is dropped unread, and nothing is
    sent to them. Their message requests are deleted; a contact stays a
    contact and your history with them stays. Nobody is told: blocking
    happens on this machine only. "kez unblock" undoes it; what they sent
    while blocked is gone.

kez block --list
    Lists the keys you blocked, with their handles when they are contacts.`,
		flags: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			var cf chatFlags
			var list bool
			cf.declare(fs, false)
			fs.BoolVar(&list, "list", false, "list the keys you blocked")
			return func(ctx context.Context, args []string) error {
				switch {
				case list && len(args) != 0:
					return usagef("block --list takes no HANDLE")
				case list:
					return runBlockList(ctx, e, cf)
				case len(args) != 1:
					return usagef("block takes one HANDLE or KEY (or --list), got %d arguments", len(args))
				}
				return runBlock(ctx, e, cf, args[0], true)
			}
		},
	})
	register(&command{
		name:    "unblock",
		args:    "HANDLE|KEY [--server URL] [--sig-server URL] [--home DIR] [--verbose]",
		summary: "receive a blocked person's messages again",
		help: `
Lifts "kez block": the person's next messages reach you again, and you
can send to them. What they sent while blocked was dropped and does not
come back.`,
		flags: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			var cf chatFlags
			cf.declare(fs, false)
			return func(ctx context.Context, args []string) error {
				if len(args) != 1 {
					return usagef("unblock takes one HANDLE or KEY, got %d arguments", len(args))
				}
				return runBlock(ctx, e, cf, args[0], false)
			}
		},
	})
}

// blockTarget is whom "kez block" names: a key, and a handle to show.
type blockTarget struct {
	key     kez.PublicKey
	handle  string // "" when not known
	contact bool
}

func (b blockTarget) String() string {
	if b.handle != "" {
		return "@" + b.handle
	}
	return b.key.String()
}

// blockTargetOf finds the key that who names: a key as it is; a contact's
// handle as pinned; any other handle as its registry names it now.
func blockTargetOf(ctx context.Context, e *env, cf chatFlags, c *chat.Client, who string) (blockTarget, error) {
	var t blockTarget
	if k, err := kez.ParsePublicKey(who); err == nil {
		t.key = k
	} else if ct, err := c.Contact(ctx, who); err == nil {
		t.key = ct.Key
	} else {
		r, err := e.homeResolver(ctx, cf.home, cf.sf)
		if err != nil {
			return blockTarget{}, err
		}
		res, err := r.Resolve(ctx, who)
		if err != nil {
			return blockTarget{}, aboutHandle(who, err)
		}
		t.key, t.handle = res.Key, res.Handle.String()
	}
	contacts, err := c.Contacts(ctx)
	if err != nil {
		return blockTarget{}, err
	}
	if i := slices.IndexFunc(contacts, func(ct *chat.Contact) bool { return ct.Key == t.key }); i >= 0 {
		t.handle, t.contact = contacts[i].Handle, true
	}
	return t, nil
}

func runBlock(ctx context.Context, e *env, cf chatFlags, who string, block bool) error {
	c, err := e.openLocalChat(ctx, cf)
	if err != nil {
		return err
	}
	defer c.Close()
	t, err := blockTargetOf(ctx, e, cf, c, who)
	if err != nil {
		return err
	}
	blocked, err := c.Blocked(ctx)
	if err != nil {
		return err
	}
	was := slices.Contains(blocked, t.key)
	if !block {
		if !was {
			fmt.Fprintf(e.stdout, "%s is not blocked.\n", t)
			return nil
		}
		if err := c.Unblock(ctx, t.key); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "Unblocked %s: their next messages reach you again (what they sent while blocked is gone).\n", t)
		return nil
	}
	if was {
		fmt.Fprintf(e.stdout, "%s is already blocked.\n", t)
		return nil
	}
	reqs, err := c.Requests(ctx)
	if err != nil {
		return err
	}
	n := 0
	for _, r := range reqs {
		if r.From == t.key {
			n++
		}
	}
	if err := c.Block(ctx, t.key); err != nil {
		return err
	}
	switch {
	case t.contact:
		fmt.Fprintf(e.stdout, "Blocked %s, a contact: what they send is dropped from now on and nothing is sent to them; your history with them stays.\n", t)
	case n > 0:
		fmt.Fprintf(e.stdout, "Blocked %s: what they send is dropped from now on, and their %d message request(s) were deleted.\n", t, n)
	default:
		fmt.Fprintf(e.stdout, "Blocked %s: what they send is dropped from now on.\n", t)
	}
	fmt.Fprintf(e.stdout, "Nobody was told. kez unblock %s undoes it.\n", t.key)
	return nil
}

func runBlockList(ctx context.Context, e *env, cf chatFlags) error {
	c, err := e.openLocalChat(ctx, cf)
	if err != nil {
		return err
	}
	defer c.Close()
	blocked, err := c.Blocked(ctx)
	if err != nil {
		return err
	}
	if len(blocked) == 0 {
		fmt.Fprintln(e.stdout, "You have blocked no one.")
		return nil
	}
	contacts, err := c.Contacts(ctx)
	if err != nil {
		return err
	}
	for _, k := range blocked {
		line := k.String()
		if i := slices.IndexFunc(contacts, func(ct *chat.Contact) bool { return ct.Key == k }); i >= 0 {
			line += "  @" + contacts[i].Handle + " (a contact)"
		}
		fmt.Fprintln(e.stdout, line)
	}
	return nil
}
