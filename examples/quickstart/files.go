package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kez-lat/kez-chat/files"
)

// Files in the story: one public, one private to bob.
const (
	publicName  = "field-notes.bin"
	privateName = "salaries.txt"
)

// openFiles opens u's file sharing, reusing the NATS login of u's chat
// client for the signalling that lets peers find each other.
func (q *quick) openFiles(ctx context.Context, u *user) error {
	s, err := files.Open(ctx, files.Config{
		Client:      u.client,
		NATS:        u.chat.Conn(),
		ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, // this machine only
	})
	if err != nil {
		return fmt.Errorf("%s's file sharing: %w", u.name, err)
	}
	u.files = s
	return nil
}

func (q *quick) share(ctx context.Context) error {
	for _, u := range q.users() {
		if err := q.openFiles(ctx, u); err != nil {
			return err
		}
	}
	dir := filepath.Join(q.dir, "alice-files")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	public := make([]byte, 3<<20+12345) // a few 256 KiB chunks
	rand.Read(public)
	private := []byte("alice 100\nbob 100\n(for bob's eyes only)\n")
	for name, b := range map[string][]byte{publicName: public, privateName: private} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return err
		}
	}

	pub, err := q.alice.files.Share(ctx, filepath.Join(dir, publicName))
	if err != nil {
		return err
	}
	q.say("      alice shares %s publicly (%d bytes, CID %s…)\n", pub.Name, pub.Size, pub.CID.String()[:20])
	priv, err := q.alice.files.Share(ctx, filepath.Join(dir, privateName), files.To("bob"))
	if err != nil {
		return err
	}
	q.say("      alice shares %s with bob only (encrypted; its name is hidden from others)\n", priv.Name)
	q.say("      each share appended a signed manifest to her sigchain; the bytes stay on her machine\n")

	if err := q.alice.files.StartServing(ctx); err != nil {
		return err
	}
	q.say("      alice's client is online and serves them over libp2p (peer ID = her key)\n")
	return nil
}

func (q *quick) browse(ctx context.Context) error {
	for _, u := range []*user{q.bob, q.carol} {
		list, err := u.files.Browse(ctx, "alice")
		if err != nil {
			return fmt.Errorf("%s browses alice: %w", u.name, err)
		}
		q.say("      %s sees:\n", u.name)
		var names []string
		for _, e := range list {
			kind := "public"
			if e.Private {
				kind = "private, shared with " + u.name
			}
			q.say("        %-16s %8d bytes  (%s)\n", e.Name, e.Size, kind)
			names = append(names, e.Name)
		}
		want := []string{publicName}
		if u == q.bob {
			want = append(want, privateName)
		}
		if !sameSet(names, want) {
			return fmt.Errorf("%s sees %v, want %v", u.name, names, want)
		}
	}
	return nil
}

func (q *quick) fetch(ctx context.Context) error {
	dst := filepath.Join(q.dir, "bob-downloads")
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return err
	}
	for _, name := range []string{publicName, privateName} {
		got, err := q.bob.files.Fetch(ctx, "alice", name, dst)
		if err != nil {
			return fmt.Errorf("bob fetches %s: %w", name, err)
		}
		want, err := os.ReadFile(filepath.Join(q.dir, "alice-files", name))
		if err != nil {
			return err
		}
		have, err := os.ReadFile(got.Path)
		if err != nil {
			return err
		}
		if !bytes.Equal(have, want) {
			return fmt.Errorf("bob's copy of %s differs from alice's", name)
		}
		how := "every chunk checked against the CID"
		if got.Private {
			how += ", then decrypted with the key alice wrapped to him"
		}
		q.say("      bob fetched %s from alice directly: %d bytes, identical (%s)\n", name, len(have), how)
	}
	return nil
}

// closeFiles stops the users' file sharing.
func (q *quick) closeFiles() error {
	var errs []error
	for _, u := range []*user{q.alice, q.bob, q.carol} {
		if u != nil && u.files != nil {
			errs = append(errs, u.files.Close())
			u.files = nil
		}
	}
	return errors.Join(errs...)
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[string]int{}
	for _, s := range a {
		seen[s]++
	}
	for _, s := range b {
		seen[s]--
	}
	for _, n := range seen {
		if n != 0 {
			return false
		}
	}
	return true
}
