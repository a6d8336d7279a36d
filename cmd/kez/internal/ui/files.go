package ui

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"charm.land/bubbles/v2/progress"
	"charm.land/bubbles/v2/textinput"
	tea "charm.land/bubbletea/v2"
	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/cmd/kez/internal/filewords"
	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/files/format"
)

// The files screen shows one of two lists.
const (
	showingContact = iota // a contact's shared files
	showingOwn            // the user's own shares
)

// The prompt open under the list, if any.
const (
	promptNone  = iota
	promptSave  // Save to: PATH
	promptShare // Share file: PATH
	promptTo    // To: HANDLE[,HANDLE…]
)

// listTimeout bounds Browse, Shared, Share and Unshare.
const listTimeout = time.Minute

// filesView is the files screen: a contact's shared files (fetch with
// progress and resume) or the user's own shares (share a file from a
// path prompt, unshare). It serves the user's shares while the UI runs.
type filesView struct {
	cfg    *Config
	ctx    context.Context // ends at close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the fetches and the start of serving

	mu       sync.Mutex // guards the four below, set by the serving goroutine
	s        *files.Sharing
	serving  bool
	count    int   // files shared, while serving
	serveErr error // why serving did not start

	mode    int
	handle  string // the contact whose files are shown
	gen     int    // the list asked for last; older answers are dropped
	loading bool
	entries []format.Entry
	own     []files.SharedFile
	listErr string
	sel     int
	top     int

	prompt  int
	input   textinput.Model
	pending format.Entry // the file the Save to prompt is for
	private bool         // the Share file prompt is for a private share
	path    string       // the file the To prompt is for

	// chat returns the chat client whose contacts a private share is
	// checked against (nil while offline); called on the UI goroutine.
	chat func() *chat.Client

	note      string // the last outcome of a share, an unshare, a refusal
	noteErr   bool
	transfers []*transfer
	bar       progress.Model
}

// newFilesView returns the files screen; it has nothing to show until
// setSharing gives it the online file sharing.
func newFilesView(cfg *Config) *filesView {
	ctx, cancel := context.WithCancel(context.Background())
	in := textinput.New()
	in.CharLimit = 4096
	return &filesView{cfg: cfg, ctx: ctx, cancel: cancel, input: in,
		bar: progress.New(progress.WithoutPercentage(), progress.WithFillCharacters('█', '░'))}
}

// setSharing hands the view the open file sharing (nil: offline) and
// starts serving the user's shares in the background; status says when
// that is done.
func (v *filesView) setSharing(s *files.Sharing) {
	v.mu.Lock()
	old := v.s
	v.s, v.serving, v.serveErr = s, false, nil
	v.mu.Unlock()
	if old != nil && old != s {
		old.Close() // replaced: it serves no more
	}
	if s == nil {
		return
	}
	v.wg.Add(1)
	go func() {
		defer v.wg.Done()
		err := s.StartServing(v.ctx)
		n := 0
		if err == nil {
			var shared []files.SharedFile
			shared, err = s.Shared(v.ctx)
			n = len(shared)
		}
		v.mu.Lock()
		defer v.mu.Unlock()
		if v.s == s {
			v.serving, v.count, v.serveErr = err == nil, n, err
		}
	}()
}

// sharing is the open file sharing, nil while offline.
func (v *filesView) sharing() *files.Sharing {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.s
}

// showContact switches the view to handle's shared files.
func (v *filesView) showContact(handle string) tea.Cmd {
	v.mode, v.handle = showingContact, handle
	v.entries, v.sel, v.top = nil, 0, 0
	v.closePrompt()
	return v.reload()
}

// showOwn switches the view to the user's own shares.
func (v *filesView) showOwn() tea.Cmd {
	v.mode = showingOwn
	v.own, v.sel, v.top = nil, 0, 0
	v.closePrompt()
	return v.reload()
}

// reload asks for the list shown again.
func (v *filesView) reload() tea.Cmd {
	v.gen++
	v.listErr = ""
	s := v.sharing()
	if s == nil {
		v.loading = false
		v.listErr = "files are not open yet (kez is connecting): press r once the status line says serving"
		return nil
	}
	v.loading = true
	gen, ctx, handle := v.gen, v.ctx, v.handle
	if v.mode == showingOwn {
		return func() tea.Msg {
			ctx, cancel := context.WithTimeout(ctx, listTimeout)
			defer cancel()
			shared, err := s.Shared(ctx)
			return ownMsg{gen: gen, shared: shared, err: err}
		}
	}
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(ctx, listTimeout)
		defer cancel()
		entries, err := s.Browse(ctx, handle)
		return browsedMsg{gen: gen, entries: entries, err: err}
	}
}

// update handles a message while the view is on screen, and every
// filesScreenMsg at any time; done reports that the user left it (Esc).
func (v *filesView) update(msg tea.Msg) (done bool, cmd tea.Cmd) {
	switch msg := msg.(type) {
	case browsedMsg:
		if msg.gen == v.gen && v.mode == showingContact {
			v.loading, v.entries, v.listErr = false, msg.entries, ""
			if msg.err != nil {
				v.listErr = v.fetchSentence(msg.err, v.handle, 0, 0)
			}
			v.clampSel()
		}
	case ownMsg:
		if msg.gen == v.gen && v.mode == showingOwn {
			v.loading, v.own, v.listErr = false, msg.shared, ""
			if msg.err != nil {
				v.listErr = v.shareSentence(msg.err, "")
			}
			v.clampSel()
		}
	case sharedMsg:
		if msg.err != nil {
			v.say(true, v.shareSentence(msg.err, msg.path))
			return false, nil
		}
		v.say(false, msg.done)
		v.mu.Lock()
		if msg.count >= 0 && v.serving {
			v.count = msg.count
		}
		v.mu.Unlock()
		if v.mode == showingOwn {
			return false, v.reload()
		}
	case transferMsg:
		return false, v.transferred(msg.t)
	case tea.KeyPressMsg:
		if v.prompt != promptNone {
			return false, v.promptKey(msg)
		}
		return v.listKey(msg)
	default:
		if v.prompt != promptNone {
			var c tea.Cmd
			v.input, c = v.input.Update(msg)
			return false, c
		}
	}
	return false, nil
}

// listKey handles a key while no prompt is open.
func (v *filesView) listKey(k tea.KeyPressMsg) (bool, tea.Cmd) {
	switch k.String() {
	case "esc", "q":
		v.note = ""
		return true, nil
	case "up", "k":
		v.sel--
	case "down", "j":
		v.sel++
	case "pgup":
		v.sel -= 10
	case "pgdown":
		v.sel += 10
	case "home", "g":
		v.sel = 0
	case "end", "G":
		v.sel = v.rows() - 1
	case "r":
		return false, v.reload()
	case "enter":
		if v.mode == showingContact && v.sel < len(v.entries) {
			e := v.entries[v.sel]
			v.pending = e
			return false, v.openPrompt(promptSave, "Save to: ", filepath.Join(v.cfg.DownloadDir, saveName(e.Name)))
		}
	case "a", "p":
		if v.mode == showingOwn {
			v.private = k.String() == "p"
			return false, v.openPrompt(promptShare, "Share file: ", "")
		}
	case "u":
		if v.mode == showingOwn && v.sel < len(v.own) {
			return false, v.unshare(v.own[v.sel])
		}
	}
	v.clampSel()
	return false, nil
}

// openPrompt opens the one-line prompt under the list.
func (v *filesView) openPrompt(kind int, label, value string) tea.Cmd {
	v.prompt = kind
	v.input.Prompt = label
	v.input.SetValue(value)
	v.input.CursorEnd()
	return v.input.Focus()
}

func (v *filesView) closePrompt() {
	v.prompt = promptNone
	v.input.Blur()
	v.input.SetValue("")
}

// promptKey handles a key while a prompt is open: Enter confirms, Esc
// cancels, the rest edits.
func (v *filesView) promptKey(k tea.KeyPressMsg) tea.Cmd {
	switch k.String() {
	case "esc":
		v.closePrompt()
		return nil
	case "enter":
	default:
		var c tea.Cmd
		v.input, c = v.input.Update(k)
		return c
	}
	value, kind := v.input.Value(), v.prompt
	v.closePrompt()
	if kind == promptShare && v.private {
		p, err := savePath(v.cfg.DownloadDir, value, "")
		if err != nil {
			v.say(true, "type the path of the file to share")
			return nil
		}
		v.path = p
		return v.openPrompt(promptTo, "To: ", "")
	}
	var to []string
	if kind == promptTo {
		for _, h := range strings.Split(value, ",") {
			if h = strings.TrimPrefix(strings.TrimSpace(h), "@"); h != "" {
				to = append(to, h)
			}
		}
		if len(to) == 0 {
			v.say(true, "a private share needs at least one handle: nothing was shared")
			return nil
		}
	}
	var dst string
	if kind == promptSave {
		p, err := savePath(v.cfg.DownloadDir, value, v.pending.Name)
		if err == nil {
			err = checkLeftovers(p)
		}
		if err != nil {
			v.say(true, err.Error())
			return nil
		}
		dst = p
	}
	s := v.sharing()
	if s == nil {
		v.say(true, "files are not open yet (kez is connecting): try again once the status line says serving")
		return nil
	}
	switch kind {
	case promptSave:
		return v.startFetch(s, v.handle, v.pending, dst)
	case promptShare:
		p, err := savePath(v.cfg.DownloadDir, value, "")
		if err != nil {
			v.say(true, "type the path of the file to share")
			return nil
		}
		return v.share(s, p, nil)
	case promptTo:
		return v.share(s, v.path, to)
	}
	return nil
}

// share shares path, publicly or privately with the handles to.
// A contact gets it at the key pinned for them, a flagged contact not at
// all (shareTo).
func (v *filesView) share(s *files.Sharing, path string, to []string) tea.Cmd {
	var c *chat.Client
	if len(to) > 0 && v.chat != nil {
		c = v.chat()
	}
	if len(to) > 0 && c == nil {
		v.say(true, "a private share is checked against your contacts, and kez is not connected yet: nothing was shared")
		return nil
	}
	v.say(false, "sharing "+cleanLine(filepath.Base(path))+"…")
	ctx := v.ctx
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(ctx, listTimeout)
		defer cancel()
		var opts []files.ShareOption
		if len(to) > 0 {
			var err error
			if opts, err = shareTo(ctx, c, to); err != nil {
				return sharedMsg{err: err, path: path}
			}
		}
		sf, err := s.Share(ctx, path, opts...)
		if err != nil {
			return sharedMsg{err: err, path: path}
		}
		how := "publicly"
		if sf.Private {
			how = "privately with " + strings.Join(sf.Recipients, ", ")
		}
		return sharedMsg{done: fmt.Sprintf("Shared %s (%s) %s.", cleanLine(sf.Name), filewords.Size(sf.Size), cleanLine(how)), count: count(ctx, s)}
	}
}

// unshare stops sharing f.
func (v *filesView) unshare(f files.SharedFile) tea.Cmd {
	s := v.sharing()
	if s == nil {
		return nil
	}
	v.say(false, "unsharing "+cleanLine(f.Name)+"…")
	ctx := v.ctx
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(ctx, listTimeout)
		defer cancel()
		if _, err := s.Unshare(ctx, f.CID.String()); err != nil {
			return sharedMsg{err: err}
		}
		return sharedMsg{done: fmt.Sprintf("Unshared %s: it is no longer in your list of shared files.", cleanLine(f.Name)), count: count(ctx, s)}
	}
}

// count is the number of files s shares, -1 if unknown.
func count(ctx context.Context, s *files.Sharing) int {
	shared, err := s.Shared(ctx)
	if err != nil {
		return -1
	}
	return len(shared)
}

// say sets the note under the list.
func (v *filesView) say(isErr bool, s string) { v.note, v.noteErr = s, isErr }

// rows is the number of rows of the list shown.
func (v *filesView) rows() int {
	if v.mode == showingOwn {
		return len(v.own)
	}
	return len(v.entries)
}

func (v *filesView) clampSel() {
	v.sel = max(0, min(v.sel, v.rows()-1))
}

// status is the files part of the status line ("serving 2 files").
func (v *filesView) status() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	switch {
	case v.s == nil || !v.serving:
		return "files offline"
	case v.count == 1:
		return "serving 1 file"
	}
	return fmt.Sprintf("serving %d files", v.count)
}

// close stops serving and ends fetches under way (the UI is quitting):
// what they verified is kept, and fetching again resumes. It waits for
// them to end, then closes the sharing.
func (v *filesView) close() {
	v.cancel()
	v.wg.Wait()
	v.mu.Lock()
	s := v.s
	v.s, v.serving = nil, false
	v.mu.Unlock()
	if s != nil {
		s.StopServing()
		s.Close()
	}
}
