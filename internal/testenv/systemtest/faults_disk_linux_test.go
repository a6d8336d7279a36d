//go:build linux

package systemtest

// Disk full and a read-only KEZ_HOME, for real. The tests run as root on
// some machines, and root ignores file modes, so chmod proves nothing.
// Instead the test binary re-runs itself as a child in new user and mount
// namespaces (no privilege needed where unprivileged user namespaces are
// allowed), where it may mount: a read-only bind mount of the state folder
// (writes fail with EROFS, whoever asks) and a size-limited tmpfs (writes
// fail with ENOSPC once it is full). The mounts vanish with the child.

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/chat"
	kezclient "github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
)

// childReport is what a child process prints (one JSON line) for the test.
type childReport struct {
	Mode       string `json:"mode"`
	OpenErr    string `json:"open_err,omitempty"`
	SyncErr    string `json:"sync_err,omitempty"`
	StoredOK   int    `json:"stored_before_error"`
	Integrity  string `json:"integrity"`
	StoredNext int    `json:"stored_after_space_freed"`
	Total      int    `json:"inbox_total"`
	Trusted    int    `json:"trusted"`
	Fatal      string `json:"fatal,omitempty"`
}

// runChild runs this test binary as a child in new user and mount
// namespaces with env, and returns its report. It skips the test when the
// kernel refuses the namespaces.
func runChild(t *testing.T, mode string, env map[string]string) childReport {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"="+mode)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil && len(out) == 0 {
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOSPC) {
			t.Skipf("this kernel does not let the test make user and mount namespaces (%v); the disk tests need them", err)
		}
		t.Fatalf("child %s: %v\n%s", mode, err, stderr.String())
	}
	var r childReport
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if line := sc.Bytes(); bytes.HasPrefix(line, []byte(`{"mode"`)) {
			if err := json.Unmarshal(line, &r); err != nil {
				t.Fatal(err)
			}
		}
	}
	if r.Mode != mode {
		t.Fatalf("child %s printed no report:\n%s\n%s", mode, out, stderr.String())
	}
	if r.Fatal != "" {
		t.Fatalf("child %s: %s\n%s", mode, r.Fatal, stderr.String())
	}
	return r
}

// childMain is the child: it sets up its mount and acts as bob.
func childMain(mode string) int {
	r := childReport{Mode: mode}
	if err := child(mode, &r); err != nil {
		r.Fatal = err.Error()
	}
	b, _ := json.Marshal(r)
	fmt.Println(string(b))
	return 0
}

func child(mode string, r *childReport) error {
	// Our mounts stay in our namespace.
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making mounts private: %w", err)
	}
	home := os.Getenv("KEZ_HOME")
	cfg := func() chat.Config {
		return chat.Config{
			Client: kezclient.Config{
				Identity:     stacktest.Identity(os.Getenv("KEZ_TEST_USER")),
				Home:         home,
				NATSURL:      os.Getenv("NATS_URL"),
				ServerURL:    os.Getenv("KEZ_SERVER"),
				SigServerURL: os.Getenv("KEZ_SIG_SERVER"),
				Domain:       domain,
				Logger:       slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
			},
			AckWait: 2 * time.Second, // deliveries cut short come back soon
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	switch mode {
	case "readonly":
		if err := syscall.Mount(home, home, "", syscall.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind mount: %w", err)
		}
		if err := syscall.Mount("", home, "", syscall.MS_REMOUNT|syscall.MS_BIND|syscall.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("read-only remount: %w", err)
		}
		if err := os.WriteFile(filepath.Join(home, "probe"), nil, 0o600); !errors.Is(err, syscall.EROFS) {
			return fmt.Errorf("the folder is not read-only: %v", err)
		}
		c, err := chat.Open(ctx, cfg())
		if err != nil {
			r.OpenErr = err.Error()
			return nil
		}
		defer c.Close()
		_, err = c.Sync(ctx)
		if err != nil {
			r.SyncErr = err.Error()
		}
		r.StoredOK = int(c.Stats().Received)
		return nil

	case "diskfull":
		mnt := filepath.Dir(home)
		size, _ := strconv.Atoi(os.Getenv("KEZ_TEST_TMPFS_KB"))
		if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, fmt.Sprintf("size=%dk", size)); err != nil {
			return fmt.Errorf("mounting a %d KiB tmpfs: %w", size, err)
		}
		if err := copyDir(os.Getenv("KEZ_TEST_SEED_HOME"), home); err != nil {
			return err
		}
		c, err := chat.Open(ctx, cfg())
		if err != nil {
			return fmt.Errorf("open before the disk is full: %w", err)
		}
		filler := filepath.Join(mnt, "filler")
		reserve, _ := strconv.Atoi(os.Getenv("KEZ_TEST_RESERVE_KB"))
		if err := fill(filler, int64(reserve)<<10); err != nil {
			return err
		}
		var serr error
		for serr == nil { // until the disk is full or nothing is left
			var n int
			n, serr = c.Sync(ctx)
			if serr == nil && n == 0 {
				break
			}
		}
		if serr != nil {
			r.SyncErr = serr.Error()
		}
		r.StoredOK = int(c.Stats().Received)
		c.Close()

		// Space comes back: the same folder opens, checks, and receives the rest.
		if err := os.Remove(filler); err != nil {
			return err
		}
		if r.Integrity, err = integrity(filepath.Join(home, chat.DBFileName)); err != nil {
			return err
		}
		c, err = chat.Open(ctx, cfg())
		if err != nil {
			return fmt.Errorf("open after space was freed: %w", err)
		}
		defer c.Close()
		// Deliveries refused for want of space were given back (nak) or
		// come back after AckWait: sync until the expected count, or give up
		// after a deadline and report what arrived.
		want, _ := strconv.Atoi(os.Getenv("KEZ_TEST_EXPECT"))
		var es []*chat.Entry
		for deadline := time.Now().Add(30 * time.Second); ; {
			n, err := c.Sync(ctx)
			if err != nil {
				return fmt.Errorf("sync after space was freed: %w", err)
			}
			r.StoredNext += n
			if es, err = c.Inbox(ctx, true); err != nil {
				return err
			}
			if len(es) >= want || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond) // redeliveries are timed by the server
		}
		r.Total = len(es)
		for _, e := range es {
			if e.Trust == chat.TrustTrusted {
				r.Trusted++
			}
		}
		return nil
	}
	return fmt.Errorf("unknown mode %q", mode)
}

// fill writes path until the file system is full, then gives back
// reserve bytes.
func fill(path string, reserve int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 16<<10)
	var n int64
	for {
		w, err := f.Write(buf)
		n += int64(w)
		if errors.Is(err, syscall.ENOSPC) {
			break
		}
		if err != nil {
			return err
		}
	}
	return f.Truncate(max(n-reserve, 0))
}

func copyDir(src, dst string) error {
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return err
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		in, err := os.Open(filepath.Join(src, e.Name()))
		if err != nil {
			return err
		}
		out, err := os.OpenFile(filepath.Join(dst, e.Name()), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err == nil {
			_, err = io.Copy(out, in)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
		}
		in.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// integrity runs SQLite's integrity check on a database file.
func integrity(path string) (string, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		return "", err
	}
	defer db.Close()
	var res string
	err = db.QueryRow("PRAGMA integrity_check").Scan(&res)
	return res, err
}

// TestDiskFullAndReadOnlyHome: bob's state folder turns read-only, then
// the disk under it fills up. Each time bob gets a clear error, nothing
// acknowledged by the stream is lost (undelivered messages stay on the
// server) and the database stays sound; once the folder is writable, or
// space is freed, the same folder receives everything, once.
func TestDiskFullAndReadOnlyHome(t *testing.T) {
	sys := startSystem(t, sysOptions{})
	alice := sys.open(t, sys.register(t, "alice"), "")
	bobUser := sys.register(t, "bob")
	bobHome := filepath.Join(t.TempDir(), "bob")
	bob := sys.open(t, bobUser, bobHome)
	befriend(t, alice, bob)
	if err := bob.Close(); err != nil {
		t.Fatal(err)
	}
	send := func(n, size int) {
		t.Helper()
		body := strings.Repeat("x", size)
		for i := range n {
			if _, err := sendWithin(alice, "bob@"+domain, fmt.Sprintf("%d %s", i, body), 20*time.Second); err != nil {
				t.Fatal(err)
			}
		}
	}
	env := map[string]string{"NATS_URL": sys.natsURL, "KEZ_SERVER": sys.chatURL, "KEZ_SIG_SERVER": sys.sigURL, "KEZ_TEST_USER": "bob"}

	// Read-only: a clear error, nothing taken from the server.
	send(5, 100)
	env["KEZ_HOME"] = bobHome
	ro := runChild(t, "readonly", env)
	t.Logf("read-only KEZ_HOME: open error %q; sync error %q; stored %d", ro.OpenErr, ro.SyncErr, ro.StoredOK)
	if ro.OpenErr == "" && ro.SyncErr == "" {
		t.Fatal("a read-only state folder gave no error")
	}
	if msg := ro.OpenErr + ro.SyncErr; !strings.Contains(msg, "read-only") && !strings.Contains(msg, "readonly") {
		t.Errorf("the error does not say the folder is read-only: %q", msg)
	}
	if res, err := integrity(filepath.Join(bobHome, chat.DBFileName)); err != nil || res != "ok" {
		t.Fatalf("integrity after the read-only run: %q %v", res, err)
	}
	bob = sys.open(t, bobUser, bobHome)
	if n, err := bob.Sync(testCtx(t, 30*time.Second)); err != nil || n != 5 {
		t.Fatalf("after the folder is writable again: %d messages, %v; want the 5 sent meanwhile", n, err)
	}
	if err := bob.Close(); err != nil {
		t.Fatal(err)
	}

	// Disk full: 40 messages of 8 KiB into a 2 MiB tmpfs with 96 KiB left.
	const n2 = 40
	send(n2, 8<<10)
	env["KEZ_HOME"] = filepath.Join(t.TempDir(), "bob") // the child mounts its tmpfs on the parent folder
	env["KEZ_TEST_SEED_HOME"] = bobHome
	env["KEZ_TEST_TMPFS_KB"] = "2048"
	env["KEZ_TEST_RESERVE_KB"] = "96"
	env["KEZ_TEST_EXPECT"] = strconv.Itoa(n2 + 5)
	full := runChild(t, "diskfull", env)
	t.Logf("disk full: sync error %q; stored before the error %d, after space was freed %d; integrity %q; inbox %d (%d trusted)",
		full.SyncErr, full.StoredOK, full.StoredNext, full.Integrity, full.Total, full.Trusted)
	if full.SyncErr == "" {
		t.Fatal("the disk never filled up: no error")
	}
	if !strings.Contains(full.SyncErr, "full") {
		t.Errorf("the error does not say the disk is full: %q", full.SyncErr)
	}
	if full.Integrity != "ok" {
		t.Fatalf("integrity after the disk filled up: %q", full.Integrity)
	}
	if full.StoredOK+full.StoredNext != n2 || full.Total != n2+5 || full.Trusted != n2+5 {
		t.Fatalf("messages: %d before the error + %d after = %d, inbox %d (%d trusted); want %d new, %d in all",
			full.StoredOK, full.StoredNext, full.StoredOK+full.StoredNext, full.Total, full.Trusted, n2, n2+5)
	}
}

// TestHomeIsAFile: a KEZ_HOME that is a file, not a folder, is a clear
// error at Open, and the file is left as it was.
func TestHomeIsAFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "home")
	if err := os.WriteFile(path, []byte("not a folder"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := chat.Open(context.Background(), chat.Config{Client: kezclient.Config{Identity: stacktest.Identity("bob"), Home: path}})
	if err == nil {
		t.Fatal("opened a file as the state folder")
	}
	t.Logf("KEZ_HOME is a file: %v", err)
	if b, _ := os.ReadFile(path); string(b) != "not a folder" {
		t.Fatalf("the file was changed: %q", b)
	}
}
