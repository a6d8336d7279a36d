package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/group"
	"github.com/kez-lat/kez-chat/handles"
)

func init() {
	register(&command{
		name:    "group",
		args:    "(create NAME [--title T] | add NAME HANDLE… | remove NAME HANDLE… | role NAME HANDLE ROLE | leave NAME | accept NAME | list [--json] | show NAME [--json]) [--nats URL] [--server URL] [--sig-server URL] [--home DIR] [--verbose]",
		summary: "make group conversations and manage who is in them",
		help: `
A group is a conversation among people, addressed NAME@domain (NAME alone
is a group of your own domain). Who is in it is a chain of links its
members sign, kept on the sig-server of its domain and checked by every
member's kez; messages to it ("kez send --group", "kez chat --group") are
encrypted once and reach every current member's devices. Someone removed
reads nothing sent after the removal; someone added reads nothing sent
before.

kez group create NAME [--title T]
    Makes the group NAME@YOUR-DOMAIN with you as its owner (--title: a
    title of up to 64 bytes, shown beside it).

kez group add NAME HANDLE…
    Adds people (owner and admins only). Each handle is resolved and its
    sigchain verified first.

kez group remove NAME HANDLE…
    Removes people (owner and admins; an admin removes members only). From
    then on nothing sent to the group reaches them.

kez group role NAME HANDLE ROLE
    Gives a member the role member, admin or owner (owner only; giving
    owner hands the group over and makes you an admin).

kez group leave NAME
    Takes you out of the group (the owner hands it over first). On an
    invitation, declines it.

kez group accept NAME
    Accepts an invitation: a group someone who is not your contact added
    you to. Until you accept, its messages are message requests (kez
    inbox --requests), and you send nothing to it, not even read
    receipts. A group a contact adds you to needs no accepting.

kez group list [--json]
    The groups you are in or were in, and your invitations. --json
    prints [{"name","title","id","role","members","epoch","seqno",
    "head","left","broken","invited","invited_by"}].

kez group show NAME [--json]
    The group's members and roles and its chain's head, fetched afresh,
    and who invited you. --json prints {"name","title","id","role",
    "epoch","seqno","head","left","broken","invited","invited_by",
    "members":[{"handle","key","role","devices"}]}.

Every change is a link signed by this device for you, appended at the
group's sig-server and announced to every member's devices (and to those
removed, so that they learn it).`,
		flags: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			var cf chatFlags
			var asJSON bool
			var title string
			cf.declare(fs, true)
			fs.BoolVar(&asJSON, "json", false, "print JSON (list, show)")
			fs.StringVar(&title, "title", "", "the group's title (create)")
			return func(ctx context.Context, args []string) error {
				if len(args) == 0 {
					return usagef("group needs create, add, remove, role, leave, accept, list or show")
				}
				sub, rest := args[0], args[1:]
				if asJSON && sub != "list" && sub != "show" {
					return usagef("--json is for group list and show only")
				}
				if title != "" && sub != "create" {
					return usagef("--title is for group create only")
				}
				switch sub {
				case "create":
					if len(rest) != 1 {
						return usagef("group create takes one NAME")
					}
				case "add", "remove":
					if len(rest) < 2 {
						return usagef("group %s takes a NAME, then one or more HANDLEs", sub)
					}
				case "role":
					if len(rest) != 3 {
						return usagef("group role takes a NAME, a HANDLE and a ROLE (member, admin or owner)")
					}
					if r := group.Role(rest[2]); r != group.RoleMember && r != group.RoleAdmin && r != group.RoleOwner {
						return usagef("%q is not a role: use member, admin or owner", rest[2])
					}
				case "leave", "accept", "show":
					if len(rest) != 1 {
						return usagef("group %s takes one NAME", sub)
					}
				case "list":
					if len(rest) != 0 {
						return usagef("group list takes no arguments")
					}
				default:
					return usagef("no group subcommand %q: use create, add, remove, role, leave, accept, list or show", sub)
				}
				return runGroup(ctx, e, cf, sub, rest, title, asJSON)
			}
		},
	})
}

func runGroup(ctx context.Context, e *env, cf chatFlags, sub string, args []string, title string, asJSON bool) error {
	var c *chat.Client
	var err error
	switch sub {
	case "list": // this install's groups: no server is asked
		c, err = e.openLocalChat(ctx, cf)
	case "show": // the chain, over HTTP
		c, err = e.openChat(ctx, cf, false)
	default: // a change, announced over NATS
		c, err = e.openChat(ctx, cf, true)
	}
	if err != nil {
		return err
	}
	defer c.Close()
	switch sub {
	case "create":
		g, err := c.CreateGroup(ctx, args[0], title)
		if err != nil {
			return aboutGroup(args[0], err)
		}
		fmt.Fprintf(e.stdout, "Created the group %s; you are its owner.\n", g.Name)
		fmt.Fprintf(e.stdout, "Add people with: kez group add %s HANDLE…\n", g.Name)
	case "add":
		if err := c.AddGroupMembers(ctx, args[0], args[1:]...); err != nil {
			return aboutGroupMember(args[0], e.unregistered(ctx, args[1:], err), err)
		}
		g, err := c.Group(ctx, args[0])
		if err != nil {
			return aboutGroup(args[0], err)
		}
		fmt.Fprintf(e.stdout, "Added %s to %s (%s).\n", atHandles(e, args[1:]), g.Name, memberCount(len(g.Members)))
	case "remove":
		if err := c.RemoveGroupMembers(ctx, args[0], args[1:]...); err != nil {
			return e.memberError(ctx, c, args[0], args[1:], err)
		}
		g, err := c.Group(ctx, args[0])
		if err != nil {
			return aboutGroup(args[0], err)
		}
		fmt.Fprintf(e.stdout, "Removed %s from %s (%s): nothing sent to the group from now on reaches them.\n", atHandles(e, args[1:]), g.Name, memberCount(len(g.Members)))
	case "role":
		if err := c.SetGroupRole(ctx, args[0], args[1], group.Role(args[2])); err != nil {
			return e.memberError(ctx, c, args[0], args[1:2], err)
		}
		fmt.Fprintf(e.stdout, "%s is now %s of %s.\n", atHandles(e, args[1:2]), roleWord(group.Role(args[2])), fullGroup(args[0], e.srv.domain))
	case "leave":
		invited := invitation(ctx, c, args[0], e.srv.domain) != nil
		if err := c.LeaveGroup(ctx, args[0]); err != nil {
			if errors.Is(err, group.ErrNotAllowed) {
				return worded(err, "you own %s, and its owner cannot leave it: hand it over first (kez group role %s HANDLE owner)", fullGroup(args[0], e.srv.domain), args[0])
			}
			return aboutGroup(args[0], err)
		}
		if invited {
			fmt.Fprintf(e.stdout, "You declined the invitation to %s: it is gone from your groups; its messages stay among your message requests (kez inbox --requests).\n", fullGroup(args[0], e.srv.domain))
			return nil
		}
		fmt.Fprintf(e.stdout, "You left %s: nothing sent to it from now on reaches you.\n", fullGroup(args[0], e.srv.domain))
	case "accept":
		name := fullGroup(args[0], e.srv.domain)
		if _, err := c.Sync(ctx); err != nil { // an invitation just sent
			return err
		}
		if invitation(ctx, c, args[0], e.srv.domain) == nil {
			if _, err := c.Group(ctx, args[0]); err != nil {
				return aboutGroup(args[0], err)
			}
			fmt.Fprintf(e.stdout, "You are in %s already: there is no invitation to accept.\n", name)
			return nil
		}
		if err := c.AcceptGroup(ctx, args[0]); err != nil {
			return aboutGroup(args[0], err)
		}
		fmt.Fprintf(e.stdout, "You accepted the invitation to %s: its messages are in your inbox (kez inbox), and kez send --group %s writes to it.\n", name, name)
	case "list":
		gs, err := c.Groups(ctx)
		if err != nil {
			return err
		}
		return printGroups(e.stdout, gs, asJSON)
	case "show":
		g, err := c.Group(ctx, args[0])
		if err != nil {
			return aboutGroup(args[0], err)
		}
		return printGroup(e.stdout, g, asJSON)
	}
	return nil
}

// groupJSON is one group in "kez group list --json" and, with its
// members, "kez group show --json"; fields may be added.
type groupJSON struct {
	Name    string `json:"name"`
	Title   string `json:"title"`
	ID      string `json:"id"`
	Role    string `json:"role"`
	Members any    `json:"members"` // a count (list), the members (show)
	Epoch   uint64 `json:"epoch"`
	Seqno   uint64 `json:"seqno"`
	Head    string `json:"head"`
	Left    bool   `json:"left"`
	Broken  bool   `json:"broken"`
	// Invited: an invitation not accepted yet, from the person whose key
	// is InvitedBy.
	Invited   bool   `json:"invited"`
	InvitedBy string `json:"invited_by"`
}

// groupMemberJSON is one member in "kez group show --json".
type groupMemberJSON struct {
	Handle  string   `json:"handle"`
	Key     string   `json:"key"`
	Role    string   `json:"role"`
	Devices []string `json:"devices"`
}

func groupOf(g *chat.Group) groupJSON {
	role := string(g.Role)
	if g.Left {
		role = ""
	}
	j := groupJSON{Name: g.Name, Title: g.Title, ID: hex.EncodeToString(g.ID[:]), Role: role, Members: len(g.Members),
		Epoch: g.Epoch, Seqno: g.Seqno, Head: g.Head.String(), Left: g.Left, Broken: g.Broken, Invited: g.Invited}
	if g.Invited {
		j.InvitedBy = g.InvitedBy.String()
	}
	return j
}

func printGroups(w io.Writer, gs []*chat.Group, asJSON bool) error {
	if asJSON {
		out := make([]groupJSON, 0, len(gs))
		for _, g := range gs {
			out = append(out, groupOf(g))
		}
		return json.NewEncoder(w).Encode(out)
	}
	if len(gs) == 0 {
		fmt.Fprintln(w, "You are in no group yet: kez group create NAME makes one.")
		return nil
	}
	for _, g := range gs {
		fmt.Fprintf(w, "%s%s  %s  %s\n", g.Name, titled(g.Title), memberCount(len(g.Members)), groupStatus(g))
	}
	return nil
}

func printGroup(w io.Writer, g *chat.Group, asJSON bool) error {
	if asJSON {
		out := groupOf(g)
		ms := make([]groupMemberJSON, 0, len(g.Members))
		for _, m := range g.Members {
			devs := make([]string, 0, len(m.Devices))
			for _, d := range m.Devices {
				devs = append(devs, d.String())
			}
			ms = append(ms, groupMemberJSON{Handle: m.Handle, Key: m.Key.String(), Role: string(m.Role), Devices: devs})
		}
		out.Members = ms
		return json.NewEncoder(w).Encode(out)
	}
	fmt.Fprintf(w, "%s%s\n", g.Name, titled(g.Title))
	fmt.Fprintf(w, "  you:      %s\n", groupStatus(g))
	if g.Invited {
		fmt.Fprintf(w, "  invited:  by %s\n", inviter(g))
	}
	fmt.Fprintf(w, "  chain:    link %d, head %s (epoch %d)\n", g.Seqno, g.Head, g.Epoch)
	fmt.Fprintf(w, "  id:       %s\n", hex.EncodeToString(g.ID[:]))
	fmt.Fprintf(w, "  %s:\n", memberCount(len(g.Members)))
	for _, m := range g.Members {
		fmt.Fprintf(w, "    @%-30s %-7s %s\n", m.Handle, m.Role, m.Key)
	}
	return nil
}

// groupStatus says the user's place in g.
func groupStatus(g *chat.Group) string {
	switch {
	case g.Broken:
		return "BROKEN: its sig-server showed two histories of it (kez group show " + g.Name + ")"
	case g.Left:
		return "no longer a member"
	case g.Invited:
		return "INVITED, not accepted (kez group accept " + g.Name + ", or kez group leave " + g.Name + " to decline); its messages are message requests"
	}
	return string(g.Role)
}

// inviter names who invited the user to g: the key, and the handle if
// it checked out (kez group show checks members' handles).
func inviter(g *chat.Group) string {
	for _, m := range g.Members {
		if m.Key == g.InvitedBy && m.HandleChecked {
			return fmt.Sprintf("@%s (%s)", m.Handle, m.Key)
		}
	}
	return g.InvitedBy.String() + " (no handle of theirs checks out)"
}

// invitation returns the pinned group name if it is an invitation, nil
// otherwise (no server is asked).
func invitation(ctx context.Context, c *chat.Client, name, domain string) *chat.Group {
	gs, err := c.Groups(ctx)
	if err != nil {
		return nil
	}
	for _, g := range gs {
		if g.Name == fullGroup(name, domain) && g.Invited {
			return g
		}
	}
	return nil
}

func titled(title string) string {
	if title == "" {
		return ""
	}
	return fmt.Sprintf(" (%q)", title)
}

func memberCount(n int) string {
	if n == 1 {
		return "1 member"
	}
	return fmt.Sprintf("%d members", n)
}

func roleWord(r group.Role) string {
	switch r {
	case group.RoleOwner:
		return "the owner"
	case group.RoleAdmin:
		return "an admin"
	}
	return "a member"
}

// atHandles lists handles as people read them: "@bob@d, @carol@d".
func atHandles(e *env, hs []string) string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = "@" + fullHandle(h, e.srv.domain)
	}
	return strings.Join(out, ", ")
}

// fullGroup completes a group NAME with the home domain.
func fullGroup(name, domain string) string {
	return fullHandle(name, domain)
}

// groupUnusable is the error of talking in a group the user left, one
// marked broken, or one the user has not accepted; nil for a group the
// user may talk in.
func groupUnusable(g *chat.Group) error {
	switch {
	case g.Broken:
		return chat.ErrGroupBroken
	case g.Left:
		return chat.ErrNotGroupMember
	case g.Invited:
		return chat.ErrGroupInvitation
	}
	return nil
}

// memberError words the error of a change naming members: chat says
// ErrNotGroupMember both for the user and for a member named, so a user
// still in the group means that a handle named is not a member.
func (e *env) memberError(ctx context.Context, c *chat.Client, name string, hs []string, err error) error {
	if errors.Is(err, chat.ErrNotGroupMember) {
		if g, gerr := c.Group(ctx, name); gerr == nil && !g.Left {
			return worded(err, "%s: not a member of %s, so nothing was changed", atHandles(e, hs), g.Name)
		}
	}
	return aboutGroupMember(name, hs, err)
}

// unregistered returns, for an error that says a handle is not
// registered, the handles of hs that no one holds (all of hs if none is
// found so); hs otherwise.
func (e *env) unregistered(ctx context.Context, hs []string, err error) []string {
	if !errors.Is(err, handles.ErrNotFound) {
		return hs
	}
	var out []string
	for _, h := range hs {
		if _, rerr := e.resolver(e.srv).Resolve(ctx, h); errors.Is(rerr, handles.ErrNotFound) {
			out = append(out, h)
		}
	}
	if len(out) == 0 {
		return hs
	}
	return out
}
