//go:build unix

package files

import (
	"context"
	"errors"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/kez-lat/kez-chat/files/format"
)

// TestFetchRefusesPlantedPartial: a fetch resumes into dst+PartialSuffix
// and records its progress in dst+StateSuffix. Someone who can write in
// the destination's folder could plant either: a link to another of the
// user's files (the fetch would write into it), a FIFO (it would hang),
// or a file they can write or own (the plaintext of a private file would
// land in a file they read). Each is refused with an *UnsafePartialError
// before anything is fetched, and nothing is written or removed; the
// linked file keeps its contents.
func TestFetchRefusesPlantedPartial(t *testing.T) {
	p := newPair(t, "tcp", nil)
	src := writePattern(t, p.dir, "src", 2*format.ChunkSize)
	tree, err := p.src.AddFile(src)
	must(t, err)
	victim := filepath.Join(t.TempDir(), "bashrc")
	must(t, os.WriteFile(victim, []byte("keep me"), 0o600))

	plants := []struct {
		name  string
		plant func(path string) error
		want  PartialProblem
	}{
		{"link", func(path string) error { return os.Symlink(victim, path) }, PartialLink},
		{"fifo", func(path string) error { return syscall.Mkfifo(path, 0o600) }, PartialNotRegular},
		{"hardlink", func(path string) error { return os.Link(victim, path) }, PartialLinked},
		{"0666", func(path string) error {
			if err := os.WriteFile(path, nil, 0o600); err != nil {
				return err
			}
			return os.Chmod(path, 0o666)
		}, PartialWritable},
	}
	if os.Getuid() == 0 {
		nobody, err := user.Lookup("nobody")
		if err != nil {
			t.Fatalf("running as root, but no user nobody to own a planted file: %v", err)
		}
		uid, _ := strconv.Atoi(nobody.Uid)
		plants = append(plants, struct {
			name  string
			plant func(path string) error
			want  PartialProblem
		}{"another owner", func(path string) error {
			if err := os.WriteFile(path, nil, 0o600); err != nil {
				return err
			}
			return os.Chown(path, uid, -1)
		}, PartialNotOwned})
	}
	for _, pl := range plants {
		for _, suffix := range []string{PartialSuffix, StateSuffix} {
			t.Run(pl.name+suffix, func(t *testing.T) {
				dst := filepath.Join(t.TempDir(), "got")
				planted := dst + suffix
				must(t, pl.plant(planted))
				before, err := os.Lstat(planted)
				must(t, err)
				err = p.fetcher.Fetch(context.Background(), p.owner.AddrInfo(), tree.CID(), dst)
				var ue *UnsafePartialError
				if !errors.Is(err, ErrUnsafePartial) || !errors.As(err, &ue) || ue.Path != planted || ue.Problem != pl.want {
					t.Fatalf("err = %v, want an *UnsafePartialError for %s (%s)", err, planted, pl.want)
				}
				if err := CheckPartial(dst); !errors.Is(err, ErrUnsafePartial) {
					t.Errorf("CheckPartial: %v", err)
				}
				if after, err := os.Lstat(planted); err != nil || !os.SameFile(before, after) || after.Mode() != before.Mode() {
					t.Errorf("the planted file was changed or removed: %v", err)
				}
				for _, left := range []string{dst, dst + PartialSuffix, dst + StateSuffix} {
					if left == planted {
						continue
					}
					if _, err := os.Lstat(left); err == nil {
						t.Errorf("%s was written", left)
					}
				}
			})
		}
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep me" {
		t.Errorf("the linked file now holds %q", b)
	}

	// The user's own partial and state files pass, and the fetch completes.
	dst := filepath.Join(t.TempDir(), "got")
	must(t, os.WriteFile(dst+PartialSuffix, []byte("x"), 0o600))
	writeState(dst+StateSuffix, tree.CID(), tree.Size(), 0)
	must(t, CheckPartial(dst))
	must(t, p.fetcher.Fetch(context.Background(), p.owner.AddrInfo(), tree.CID(), dst))
	sameFile(t, src, dst)
}

// TestOpenLeftoverRefusesSwapped: a link or FIFO put in place after
// CheckPartial looked is refused as it is opened (O_NOFOLLOW, and no
// waiting for a FIFO's writer), and the state file's temporary file is
// created anew, never written through a link found there.
func TestOpenLeftoverRefusesSwapped(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	must(t, os.WriteFile(victim, []byte("keep me"), 0o600))
	link, fifo := filepath.Join(dir, "link"), filepath.Join(dir, "fifo")
	must(t, os.Symlink(victim, link))
	must(t, syscall.Mkfifo(fifo, 0o600))
	for path, want := range map[string]PartialProblem{link: PartialLink, fifo: PartialNotRegular} {
		for _, flag := range []int{os.O_RDWR | os.O_CREATE, os.O_RDONLY} {
			f, err := openLeftover(path, flag, 0o600)
			var ue *UnsafePartialError
			if !errors.As(err, &ue) || ue.Problem != want {
				t.Errorf("openLeftover(%s, %#x) = %v, %v; want %s", path, flag, f, err, want)
			}
		}
	}

	state := filepath.Join(dir, "got"+StateSuffix)
	must(t, os.Symlink(victim, state+".tmp"))
	tree := treeOf(t, []byte("data"))
	writeState(state, tree.CID(), 4, 1)
	if b, _ := os.ReadFile(victim); string(b) != "keep me" {
		t.Errorf("writeState wrote through a link: the linked file holds %q", b)
	}
	if h, size, err := readState(state, tree.CID()); err != nil || h != 1 || size != 4 {
		t.Errorf("readState after writeState = %d, %d, %v", h, size, err)
	}
}
