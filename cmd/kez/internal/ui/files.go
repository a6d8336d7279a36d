package ui

import (
	tea "charm.land/bubbletea/v2"
	"github.com/kez-lat/kez-chat/files"
)

// filesView is the files screen: a contact's shared files (fetch with
// progress and resume) or the user's own shares (share a file from a
// path prompt, unshare). Placeholder until the files screen lands.
type filesView struct {
	cfg *Config
	s   *files.Sharing
}

// newFilesView returns the files screen; it has nothing to show until
// setSharing gives it the online file sharing.
func newFilesView(cfg *Config) *filesView { return &filesView{cfg: cfg} }

// setSharing hands the view the open file sharing (nil: offline).
func (v *filesView) setSharing(s *files.Sharing) { v.s = s }

// showContact switches the view to handle's shared files.
func (v *filesView) showContact(handle string) tea.Cmd { return nil }

// showOwn switches the view to the user's own shares.
func (v *filesView) showOwn() tea.Cmd { return nil }

// update handles a message while the view is on screen; done reports
// that the user left it (Esc).
func (v *filesView) update(msg tea.Msg) (done bool, cmd tea.Cmd) { return false, nil }

// view draws the screen in width×height cells.
func (v *filesView) view(width, height int) string { return "" }

// status is the files part of the status line ("serving 2 files").
func (v *filesView) status() string { return "" }

// close stops serving and ends fetches under way (the UI is quitting).
func (v *filesView) close() {}
