package main

import (
	"context"
	"flag"
	"fmt"
	"runtime"
	"runtime/debug"
)

func init() {
	register(&command{
		name:    "version",
		args:    "",
		summary: "print which kez this is",
		help: `
Prints the version of this kez: the module version it was built from
("go install github.com/kez-lat/kez-chat/cmd/kez@v1.2.3" gives v1.2.3), or
"devel" and the commit for a build from a checkout, and the Go version.
kez also tells the peers it fetches from or serves to this version
(libp2p agent "kez/VERSION").`,
		flags: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			return func(ctx context.Context, args []string) error {
				if len(args) > 0 {
					return usagef("version takes no arguments, got %q", args)
				}
				fmt.Fprintf(e.stdout, "kez %s (%s)\n", version(), runtime.Version())
				return nil
			}
		},
	})
}

// version is this build's version: the module version of a build from a
// module (go install …@v1.2.3), else "devel", with the commit (and
// "-dirty" for uncommitted changes) when the build recorded one.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	v := bi.Main.Version
	if v != "" && v != "(devel)" {
		return v
	}
	v = "devel"
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" {
		v += "+" + rev + dirty
	}
	return v
}

// userAgent is the libp2p agent version kez announces to its peers.
func userAgent() string { return "kez/" + version() }
