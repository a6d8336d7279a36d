package ui

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"unicode"

	tea "charm.land/bubbletea/v2"
	"github.com/kez-lat/kez-chat/cmd/kez/internal/filewords"
	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/files/format"
)

// filesScreenMsg marks the messages of the files screen. The model hands every
// one of them to filesView.update, whichever screen is showing: a fetch
// goes on while the user chats.
type filesScreenMsg interface{ isFilesMsg() }

// browsedMsg is a contact's list of shared files (Sharing.Browse).
type browsedMsg struct {
	gen     int
	entries []format.Entry
	err     error
}

// ownMsg is the user's own shares (Sharing.Shared).
type ownMsg struct {
	gen    int
	shared []files.SharedFile
	err    error
}

// sharedMsg ends a share or an unshare.
type sharedMsg struct {
	done  string // the sentence when it worked
	err   error
	path  string // the path shared, for the error's sentence
	count int    // the files shared now; -1 if unknown
}

// transferMsg says that a fetch progressed or ended.
type transferMsg struct{ t *transfer }

func (browsedMsg) isFilesMsg()  {}
func (ownMsg) isFilesMsg()      {}
func (sharedMsg) isFilesMsg()   {}
func (transferMsg) isFilesMsg() {}

// transfer is one fetch. The fetch's goroutine writes verified and total
// and pokes notify without ever blocking (a poke already pending stands
// for this one too: the screen draws the latest figures); the UI's
// goroutine reads them when the poke arrives.
type transfer struct {
	handle, name, path string
	resuming           bool // a partial file was there: the fetch continues it

	verified, total atomic.Int64
	notify          chan struct{} // capacity 1
	done            chan struct{} // closed when the fetch returned
	got             *files.Fetched
	err             error // read only once done is closed

	cancel context.CancelFunc
	line   string // the sentence once ended
	failed bool
}

// progress is the fetch's files.WithProgress callback.
func (t *transfer) progress(verified, total int64) {
	t.verified.Store(verified)
	t.total.Store(total)
	select {
	case t.notify <- struct{}{}:
	default:
	}
}

// wait returns a command that waits for t's next progress or its end.
func (t *transfer) wait() tea.Cmd {
	return func() tea.Msg {
		select {
		case <-t.notify:
		case <-t.done:
		}
		return transferMsg{t}
	}
}

// ended reports whether the fetch returned.
func (t *transfer) ended() bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

// startFetch fetches e from handle to path in a goroutine that close
// waits for.
func (v *filesView) startFetch(s *files.Sharing, handle string, e format.Entry, path string) tea.Cmd {
	for _, t := range v.transfers {
		if t.path == path && !t.ended() {
			v.say(true, fmt.Sprintf("%s is already being fetched to %s", cleanLine(e.Name), cleanLine(path)))
			return nil
		}
	}
	_, err := os.Lstat(path + files.PartialSuffix)
	ctx, cancel := context.WithCancel(v.ctx)
	t := &transfer{handle: handle, name: e.Name, path: path, resuming: err == nil,
		notify: make(chan struct{}, 1), done: make(chan struct{}), cancel: cancel}
	v.transfers = append(v.transfers, t)
	if len(v.transfers) > maxTransfers {
		v.transfers = v.transfers[len(v.transfers)-maxTransfers:]
	}
	v.wg.Add(1)
	go func() {
		defer v.wg.Done()
		defer cancel()
		got, err := s.Fetch(ctx, handle, e.CID.String(), path, files.WithProgress(t.progress))
		t.got, t.err = got, err
		close(t.done)
	}()
	v.note = ""
	return t.wait()
}

// maxTransfers is how many fetches the screen keeps (the oldest ended
// ones go first).
const maxTransfers = 3

// transferred takes a transferMsg: it waits again, or words the end.
func (v *filesView) transferred(t *transfer) tea.Cmd {
	if !t.ended() {
		return t.wait()
	}
	if t.line != "" {
		return nil
	}
	if t.err == nil {
		t.line = filewords.Fetched(t.got, t.handle) + "\nSaved to " + cleanLine(t.got.Path)
		return nil
	}
	t.failed = true
	t.line = v.fetchSentence(t.err, t.handle, t.verified.Load(), t.total.Load())
	return nil
}

// fetchSentence words a fetch (or a Browse) that failed, for the files
// screen: the facts in the CLI's words (filewords), with what to do here.
func (v *filesView) fetchSentence(err error, who string, verified, total int64) string {
	var (
		offline   *files.OfflineError
		unreach   *files.UnreachableError
		notShared *files.NotSharedError
		changed   *files.ChangedError
		pathErr   *fs.PathError
	)
	again := ": press Enter on the file to try again"
	switch {
	case errors.Is(err, context.Canceled) || errors.Is(err, files.ErrClosed):
		if verified > 0 && verified < total {
			return fmt.Sprintf("the fetch was interrupted with %s of %s verified, which is kept: fetch it again to resume", filewords.Size(verified), filewords.Size(total))
		}
		return "the fetch was interrupted before any of it was verified"
	case errors.As(err, &offline):
		return filewords.Offline(offline) + ": ask them to open kez ui or run kez serve" + again
	case errors.As(err, &unreach):
		return filewords.Unreachable(unreach) + again
	case errors.As(err, &notShared):
		return filewords.NotShared(notShared) + ": r reloads the list"
	case errors.As(err, &changed):
		return filewords.Changed(changed)
	case errors.Is(err, files.ErrForbidden):
		return filewords.Forbidden(who)
	case errors.Is(err, files.ErrNotFound):
		return filewords.NotFound(who) + ": r reloads the list"
	case errors.Is(err, files.ErrBusy):
		return filewords.Busy(who) + again + " in a moment"
	case errors.Is(err, files.ErrCorrupt):
		return filewords.Corrupt(who) + ": try again later, and tell them if it happens again"
	case errors.Is(err, fs.ErrExist) && errors.As(err, &pathErr):
		return fmt.Sprintf("%s already exists, so nothing was fetched: press Enter on the file and give another path", cleanLine(pathErr.Path))
	}
	return v.explain(err)
}

// explain words an error no case of the files screen knows: the kez
// command's sentence for it (Config.Explain), else its text.
func (v *filesView) explain(err error) string {
	if v.cfg.Explain != nil {
		return cleanLine(v.cfg.Explain(err))
	}
	return cleanLine(err.Error())
}

// shareSentence words a share or unshare that failed.
func (v *filesView) shareSentence(err error, path string) string {
	var changed *files.ChangedError
	var notShared *files.NotSharedError
	var flagged *flaggedRecipientError
	var moved *files.RecipientKeyError
	switch {
	case errors.As(err, &flagged):
		return flagged.Error()
	case errors.As(err, &moved):
		return fmt.Sprintf("nothing was shared: @%s names another key than the one pinned for them now. Open the conversation to compare the new key's safety number", cleanLine(moved.Handle))
	case errors.Is(err, files.ErrNotPrimary):
		return "sharing and unsharing need your primary key, which this linked device does not hold: do it on the install made by kez init or kez recover"
	case errors.As(err, &changed):
		return filewords.Changed(changed)
	case errors.As(err, &notShared):
		return filewords.NotShared(notShared)
	case errors.Is(err, fs.ErrNotExist) && path != "":
		return fmt.Sprintf("there is no file at %s, so nothing was shared", cleanLine(path))
	}
	return v.explain(err)
}

// saveName is the file name a fetch proposes for name: name as drawn
// (cleanLine), with any path separator and any character that is not
// graphic made '_', and "download" for a name that would be no name ("",
// ".", "..").
func saveName(name string) string {
	b := strings.Map(func(r rune) rune {
		if !unicode.IsGraphic(r) || r == '/' || r == '\\' || r == filepath.Separator {
			return '_'
		}
		return r
	}, cleanLine(name))
	if b == "" || b == "." || b == ".." {
		return "download"
	}
	return b
}

// savePath resolves the path the user confirmed: ~/ is their home, a
// relative path is in dir, and a folder gets the file under saveName(name).
// The result is where the fetch writes, and nowhere else.
func savePath(dir, typed, name string) (string, error) {
	p := strings.TrimSpace(typed)
	if p == "" {
		return "", errors.New("type the path to save the file to")
	}
	if p == "~" || strings.HasPrefix(p, "~"+string(filepath.Separator)) {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", errors.New("your home folder is not known here: type a full path")
		}
		p = filepath.Join(home, p[1:])
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(dir, p)
	}
	p = filepath.Clean(p)
	if st, err := os.Stat(p); err == nil && st.IsDir() {
		p = filepath.Join(p, saveName(name))
	}
	return p, nil
}
