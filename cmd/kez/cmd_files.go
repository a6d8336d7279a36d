package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kez-lat/kez-chat/handles"
)

func init() {
	register(&command{
		name:    "files",
		args:    "[HANDLE | --group GROUP | --fetched] [--json] [--nats URL] [--server URL] [--sig-server URL] [--home DIR] [--verbose]",
		summary: "list the files someone shares (or, without HANDLE, yours)",
		help: `
Lists the files HANDLE shares that you may see: every public file, and the
private ones shared with you, with their real names. The list is read from
their sigchain and verified on this machine, so it works while they are
offline; "kez fetch HANDLE NAME" downloads one (they must be online then).

Without HANDLE it lists what you share from this machine: name, size,
who a private file is for, and where the file is on disk.

--group GROUP lists the files shared with the group GROUP that were
offered to you there (kez share --group; your own included), oldest
first: your kez takes what waits for you first. A file offered before
you joined is not among them. "kez fetch --group GROUP NAME" downloads
one.

--fetched lists the public files you fetched, oldest first: what "kez
serve --reshare" re-serves (a file changed on disk since is marked and not
re-served).

--json prints an array of {"name","size","cid","private"} plus
"media_type","mtime" (RFC 3339); for your own files also "path",
"recipients" and, for a file shared with a group, "group"; with --group
also "from" (the handle of who shared it), "from_key", "offered_at" and
"id" (the offer's message ID); with --fetched {"name","size","cid","path",
"owner","owner_key","fetched_at","mtime","changed"}.`,
		flags: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			var cf chatFlags
			var asJSON bool
			var grp string
			var fetched bool
			cf.declare(fs, true)
			fs.BoolVar(&fetched, "fetched", false, "list the public files you fetched")
			fs.BoolVar(&asJSON, "json", false, "print JSON")
			fs.StringVar(&grp, "group", "", "list the files shared with this group")
			return func(ctx context.Context, args []string) error {
				if fetched {
					if len(args) != 0 || grp != "" {
						return usagef("files --fetched takes no HANDLE nor --group")
					}
					return runFetchedFiles(ctx, e, cf, asJSON)
				}
				if grp != "" {
					if len(args) != 0 {
						return usagef("files --group takes no HANDLE, got %d arguments", len(args))
					}
					return runGroupFiles(ctx, e, cf, grp, asJSON)
				}
				switch len(args) {
				case 0:
					return runOwnFiles(ctx, e, cf, asJSON)
				case 1:
					return runFiles(ctx, e, cf, args[0], asJSON)
				}
				return usagef("files takes at most one HANDLE, got %d arguments", len(args))
			}
		},
	})
}

// fileJSON is one element of "kez files HANDLE --json"; fields may be
// added.
type fileJSON struct {
	Name      string    `json:"name"`
	Size      int64     `json:"size"`
	CID       string    `json:"cid"`
	Private   bool      `json:"private"`
	MediaType string    `json:"media_type"`
	ModTime   time.Time `json:"mtime"`
}

// ownFileJSON is one element of "kez files --json" (your own files): a
// fileJSON with where it is and whom a private file is for ([] if public).
type ownFileJSON struct {
	fileJSON
	Path       string   `json:"path"`
	Recipients []string `json:"recipients"`
	Group      string   `json:"group,omitempty"` // a file shared with a group
}

// groupFileJSON is one element of "kez files --group GROUP --json"; fields
// may be added.
type groupFileJSON struct {
	fileJSON
	From      string    `json:"from"` // handle, or key when none is known
	FromKey   string    `json:"from_key"`
	OfferedAt time.Time `json:"offered_at"`
	ID        string    `json:"id"`
}

func runFiles(ctx context.Context, e *env, cf chatFlags, handle string, asJSON bool) error {
	s, setup, err := e.openSharing(ctx, cf, false, nil, "")
	if err != nil {
		return err
	}
	defer s.Close()
	list, err := s.Browse(ctx, handle)
	if err != nil {
		return aboutHandle(handle, err)
	}
	out := make([]fileJSON, 0, len(list))
	for _, f := range list {
		out = append(out, fileJSON{Name: f.Name, Size: f.Size, CID: f.CID.String(), Private: f.Private, MediaType: f.MediaType, ModTime: f.ModTime.UTC()})
	}
	if asJSON {
		return json.NewEncoder(e.stdout).Encode(out)
	}
	who := fullHandle(handle, setup.srv.domain)
	if len(out) == 0 {
		fmt.Fprintf(e.stdout, "@%s shares no files you can see.\n", who)
		return nil
	}
	fmt.Fprintf(e.stdout, "@%s shares %d file(s) you can see:\n", who, len(out))
	own := make([]ownFileJSON, len(out))
	for i, f := range out {
		own[i].fileJSON = f
	}
	printFiles(e.stdout, own)
	fmt.Fprintf(e.stdout, "Fetch one with: kez fetch @%s NAME\n", who)
	return nil
}

func runOwnFiles(ctx context.Context, e *env, cf chatFlags, asJSON bool) error {
	s, _, err := e.openSharing(ctx, cf, false, nil, "")
	if err != nil {
		return err
	}
	defer s.Close()
	list, err := s.Shared(ctx)
	if err != nil {
		return err
	}
	out := make([]ownFileJSON, 0, len(list))
	for _, f := range list {
		out = append(out, ownFileJSON{
			fileJSON:   fileJSON{Name: f.Name, Size: f.Size, CID: f.CID.String(), Private: f.Private, MediaType: f.MediaType, ModTime: f.ModTime.UTC()},
			Path:       f.Path,
			Recipients: append([]string{}, f.Recipients...),
			Group:      f.Group,
		})
	}
	if asJSON {
		return json.NewEncoder(e.stdout).Encode(out)
	}
	if len(out) == 0 {
		fmt.Fprintln(e.stdout, "You share no files from this machine; kez share PATH shares one.")
		return nil
	}
	fmt.Fprintf(e.stdout, "You share %d file(s) from this machine (served while kez serve runs):\n", len(out))
	printFiles(e.stdout, out)
	return nil
}

// printFiles prints a list of files; Path is set only for the user's own,
// which then also name a private file's recipients.
func printFiles(w io.Writer, list []ownFileJSON) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	for _, f := range list {
		own := f.Path != ""
		kind := "public"
		if f.Private {
			kind = "private"
			switch {
			case own && f.Group != "":
				kind = "private: group " + f.Group
			case own:
				kind = "private: @" + strings.Join(f.Recipients, ", @")
			}
		}
		line := fmt.Sprintf("  %s\t%s\t%s\t%s", f.Name, humanSize(f.Size), kind, f.ModTime.Local().Format("2006-01-02 15:04"))
		if own {
			line += "\t" + f.Path
		}
		fmt.Fprintln(tw, line)
	}
	tw.Flush()
}

// fullHandle returns handle as name@domain, a bare name completed with the
// home domain, so every command names a person the same way; a handle that
// does not parse comes back as typed, without a leading "@".
func fullHandle(handle, domain string) string {
	h, err := handles.Rules{DefaultDomain: domain, AllowLocal: true}.Parse(handle)
	if err != nil {
		return strings.TrimPrefix(handle, "@")
	}
	return h.String()
}

// runGroupFiles lists the files offered in the group grp.
func runGroupFiles(ctx context.Context, e *env, cf chatFlags, grp string, asJSON bool) error {
	c, g, err := e.openGroup(ctx, cf, grp)
	if err != nil {
		return err
	}
	defer shutdownChat(c)
	offers, err := c.GroupFiles(ctx, g.Name)
	if err != nil {
		return err
	}
	out := make([]groupFileJSON, 0, len(offers))
	for _, f := range offers {
		from := f.OwnerHandle
		if from == "" {
			from = f.Offer.Owner.String()
		}
		out = append(out, groupFileJSON{
			fileJSON: fileJSON{Name: f.Offer.Name, Size: f.Offer.Size, CID: f.Offer.CID.String(), Private: true,
				MediaType: f.Offer.MediaType, ModTime: f.Offer.ModTime.UTC()},
			From: from, FromKey: f.Offer.Owner.String(), OfferedAt: f.Message.SentAt.UTC(), ID: f.Message.ID.String(),
		})
	}
	if asJSON {
		return json.NewEncoder(e.stdout).Encode(out)
	}
	if len(out) == 0 {
		fmt.Fprintf(e.stdout, "No file was shared with %s since you joined it; kez share --group %s PATH shares one.\n", g.Name, g.Name)
		return nil
	}
	fmt.Fprintf(e.stdout, "%d file(s) were shared with %s:\n", len(out), g.Name)
	tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
	for _, f := range out {
		who := f.From
		if who != f.FromKey {
			who = "@" + who
		}
		fmt.Fprintf(tw, "  %s\t%s\tfrom %s\t%s\n", f.Name, humanSize(f.Size), who, f.OfferedAt.Local().Format("2006-01-02 15:04"))
	}
	tw.Flush()
	fmt.Fprintf(e.stdout, "Fetch one with: kez fetch --group %s NAME\n", g.Name)
	return nil
}

// fetchedFileJSON is one element of "kez files --fetched --json"; fields
// may be added.
type fetchedFileJSON struct {
	Name      string    `json:"name"`
	Size      int64     `json:"size"`
	CID       string    `json:"cid"`
	Path      string    `json:"path"`
	Owner     string    `json:"owner"`
	OwnerKey  string    `json:"owner_key"`
	FetchedAt time.Time `json:"fetched_at"`
	ModTime   time.Time `json:"mtime"`
	Changed   bool      `json:"changed"`
}

// runFetchedFiles lists the public files this install fetched.
func runFetchedFiles(ctx context.Context, e *env, cf chatFlags, asJSON bool) error {
	s, _, err := e.openSharing(ctx, cf, false, nil, "")
	if err != nil {
		return err
	}
	defer s.Close()
	list, err := s.Fetched(ctx)
	if err != nil {
		return err
	}
	if asJSON {
		out := make([]fetchedFileJSON, 0, len(list))
		for _, f := range list {
			out = append(out, fetchedFileJSON{Name: f.Name, Size: f.Size, CID: f.CID.String(), Path: f.Path, Owner: f.Owner,
				OwnerKey: f.OwnerKey.String(), FetchedAt: f.FetchedAt.UTC(), ModTime: f.ModTime.UTC(), Changed: f.Changed})
		}
		return json.NewEncoder(e.stdout).Encode(out)
	}
	if len(list) == 0 {
		fmt.Fprintln(e.stdout, "You fetched no public files on this machine.")
		return nil
	}
	fmt.Fprintf(e.stdout, "You fetched %d public file(s) on this machine (kez serve --reshare serves them to others):\n", len(list))
	tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
	for _, f := range list {
		state := "from @" + f.Owner
		if f.Changed {
			state += ", changed on disk since: not re-served"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", f.Name, humanSize(f.Size), state, f.FetchedAt.Local().Format("2006-01-02 15:04"), f.Path)
	}
	return tw.Flush()
}
