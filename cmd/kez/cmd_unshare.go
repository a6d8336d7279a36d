package main

import (
	"context"
	"flag"
	"fmt"
)

func init() {
	register(&command{
		name:    "unshare",
		args:    "NAME|CID [--server URL] [--sig-server URL] [--home DIR] [--verbose]",
		summary: "stop sharing a file",
		help: `
Removes the file shared under NAME (or with the content address CID) from
the list in your sigchain and from your share index: nobody sees it in
"kez files" any more and your machine no longer sends it. The file itself
stays where it is. Copies others already fetched stay theirs.

"kez files" with no HANDLE lists what you share.`,
		flags: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			var cf chatFlags
			cf.declare(fs, false)
			return func(ctx context.Context, args []string) error {
				if len(args) != 1 {
					return usagef("unshare takes one NAME or CID, got %d arguments", len(args))
				}
				return runUnshare(ctx, e, cf, args[0])
			}
		},
	})
}

func runUnshare(ctx context.Context, e *env, cf chatFlags, what string) error {
	s, _, err := e.openSharing(ctx, cf, false, nil, "")
	if err != nil {
		return err
	}
	defer s.Close()
	removed, err := s.Unshare(ctx, what)
	if err != nil {
		return err
	}
	for _, r := range removed {
		name := fmt.Sprintf("%q", r.Name)
		if r.Name == "" {
			name = "a private file you cannot read from here"
		}
		fmt.Fprintf(e.stdout, "Unshared %s (CID %s).\n", name, r.CID)
	}
	return nil
}
