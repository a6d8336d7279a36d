// Command fileshare shows KEZ peer-to-peer file sharing with the SDK
// (package files): one user publishes a folder, another mirrors it. Files go
// directly between the two machines over libp2p; the servers only carry the
// signed list of files (in the sigchain) and the "where are you?" signal
// (over NATS).
//
//	fileshare publish DIR [--to HANDLE]...   share every file in DIR (only with the HANDLEs, if given), then serve until Ctrl-C
//	fileshare mirror HANDLE DIR              fetch every file HANDLE shares with you into DIR
//
// It uses the identity and servers of the kez CLI: KEZ_HOME (after "kez
// init" and "kez register"), NATS_URL and KEZ_SERVER (". DIR/env" of a dev
// stack sets both); the chat-server names its handle domain and
// sig-server.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"

	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/kez"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "fileshare:", err)
		os.Exit(1)
	}
}

// multi collects a repeated flag.
type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

const usage = "usage: fileshare publish DIR [--to HANDLE]... | fileshare mirror HANDLE DIR"

func run(ctx context.Context, args []string, getenv func(string) string, out io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	fs := flag.NewFlagSet("fileshare", flag.ContinueOnError)
	var to multi
	fs.Var(&to, "to", "share privately with this handle (repeat for several)")
	cmd, rest, pos := args[0], args[1:], []string(nil)
	for { // flags may come before, between or after the arguments
		if err := fs.Parse(rest); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		pos, rest = append(pos, fs.Arg(0)), fs.Args()[1:]
	}
	if !(cmd == "publish" && len(pos) == 1) && !(cmd == "mirror" && len(pos) == 2) {
		return errors.New(usage)
	}
	home := getenv("KEZ_HOME")
	id, err := kez.LoadIdentity(home, nil)
	if err != nil {
		return err
	}
	s, err := files.Open(ctx, files.Config{Client: client.Config{
		Identity: id, Home: home, NATSURL: getenv("NATS_URL"), ServerURL: getenv("KEZ_SERVER"),
	}})
	if err != nil {
		return err
	}
	defer s.Close()

	if cmd == "publish" {
		return publish(ctx, s, pos[0], to, out)
	}
	return mirror(ctx, s, pos[0], pos[1], out)
}

// publish shares every regular file in dir, then serves them until ctx ends.
func publish(ctx context.Context, s *files.Sharing, dir string, to []string, out io.Writer) error {
	list, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	n := 0
	for _, e := range list {
		if !e.Type().IsRegular() {
			continue
		}
		f, err := s.Share(ctx, filepath.Join(dir, e.Name()), files.To(to...))
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "shared %s (%d bytes, %s)\n", f.Name, f.Size, f.CID)
		n++
	}
	fmt.Fprintf(out, "serving %d files; Ctrl-C stops\n", n)
	return s.Serve(ctx)
}

// mirror fetches every file owner shares with this user into dir, waiting
// for the owner to come online if needed.
func mirror(ctx context.Context, s *files.Sharing, owner, dir string, out io.Writer) error {
	list, err := s.Browse(ctx, owner)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, e := range list {
		got, err := s.Fetch(ctx, owner, e.Name, filepath.Join(dir, e.Name),
			files.WithWait(0, nil), files.WithOverwrite())
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "fetched %s (%d bytes, verified)\n", got.Path, got.Size)
	}
	fmt.Fprintf(out, "%d files from %s\n", len(list), owner)
	return nil
}
