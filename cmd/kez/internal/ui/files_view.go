package ui

import (
	"fmt"
	"strings"

	"charm.land/lipgloss/v2"
	"github.com/charmbracelet/x/ansi"
	"github.com/kez-lat/kez-chat/cmd/kez/internal/filewords"
)

var (
	filesTitle    = lipgloss.NewStyle().Bold(true)
	filesSelected = lipgloss.NewStyle().Reverse(true)
	filesDim      = lipgloss.NewStyle().Faint(true)
	filesBad      = lipgloss.NewStyle().Foreground(lipgloss.Red)
)

// view draws the screen in width×height cells: a title, the list (the
// part around the selection that fits), then the prompt, the fetches,
// the last note and the keys.
func (v *filesView) view(width, height int) string {
	if width <= 0 || height <= 0 {
		return ""
	}
	var foot []string
	if v.prompt != promptNone {
		v.input.SetWidth(max(1, width-lipgloss.Width(v.input.Prompt)-1))
		foot = append(foot, v.input.View())
	}
	for _, t := range v.transfers {
		foot = append(foot, v.transferLines(t, width)...)
	}
	if v.note != "" {
		st := filesDim
		if v.noteErr {
			st = filesBad
		}
		foot = append(foot, wrap(v.note, width, st)...)
	}
	foot = append(foot, filesDim.Render(v.keys()))

	head := []string{filesTitle.Render(v.title())}
	listH := height - len(head) - len(foot)
	if listH < 1 {
		// A small terminal: the list and the keys first, the rest cut.
		foot = foot[max(0, len(foot)-max(0, height-2)):]
		listH = max(0, height-len(head)-len(foot))
	}
	lines := append(head, v.list(width, listH)...)
	lines = append(lines, foot...)
	if len(lines) > height {
		lines = lines[:height]
	}
	for i, l := range lines {
		lines[i] = ansi.Truncate(l, width, "…")
	}
	return strings.Join(lines, "\n")
}

// title is the first row.
func (v *filesView) title() string {
	if v.mode == showingOwn {
		return "Your shared files — " + v.status()
	}
	return "Files " + cleanLine(v.handle) + " shares with you"
}

// keys is the last row: what the keys do here.
func (v *filesView) keys() string {
	switch {
	case v.prompt == promptSave:
		return "Enter fetch to this path · Esc cancel"
	case v.prompt != promptNone:
		return "Enter confirm · Esc cancel"
	case v.mode == showingOwn:
		return "a share · p share privately · u unshare · r reload · Esc back"
	}
	return "↑/↓ move · Enter fetch · r reload · Esc back"
}

// list draws the rows of the list that fit in h lines, the selection
// among them.
func (v *filesView) list(width, h int) []string {
	if h <= 0 {
		return nil
	}
	var out []string
	switch {
	case v.loading:
		out = append(out, filesDim.Render("loading…"))
	case v.listErr != "":
		out = append(out, wrap(v.listErr, width, filesBad)...)
	case v.rows() == 0 && v.mode == showingOwn:
		out = append(out, "You share no files: press a to share one.")
	case v.rows() == 0:
		out = append(out, cleanLine(v.handle)+" shares no files with you.")
	}
	if len(out) > 0 || v.loading {
		if len(out) > h {
			out = out[:h]
		}
		return out
	}
	n := v.rows()
	if v.sel < v.top {
		v.top = v.sel
	}
	if v.sel >= v.top+h {
		v.top = v.sel - h + 1
	}
	v.top = max(0, min(v.top, n-h))
	for i := v.top; i < n && i < v.top+h; i++ {
		var name, size, kind string
		if v.mode == showingOwn {
			f := v.own[i]
			name, size, kind = f.Name, filewords.Size(f.Size), "public"
			switch {
			case f.Group != "":
				kind = "private to " + f.Group
			case f.Private:
				kind = "private to " + strings.Join(f.Recipients, ", ")
			}
		} else {
			e := v.entries[i]
			name, size, kind = e.Name, filewords.Size(e.Size), "public"
			if e.Private {
				kind = "private"
			}
		}
		out = append(out, row(cleanLine(name), size, cleanLine(kind), width, i == v.sel))
	}
	return out
}

// row draws one file: its name, then its size and kind on the right.
func row(name, size, kind string, width int, selected bool) string {
	right := fmt.Sprintf("  %10s  %s", size, kind)
	if v := lipgloss.Width(right); v > width/2 {
		right = ansi.Truncate(right, width/2, "…")
	}
	nameW := max(1, width-2-lipgloss.Width(right))
	name = ansi.Truncate(name, nameW, "…")
	line := name + strings.Repeat(" ", max(0, nameW-lipgloss.Width(name))) + right
	if selected {
		return "› " + filesSelected.Render(line)
	}
	return "  " + line
}

// transferLines draws one fetch: its bar and figures while it runs, then
// the sentence of how it ended.
func (v *filesView) transferLines(t *transfer, width int) []string {
	if t.line != "" {
		st := lipgloss.NewStyle()
		if t.failed {
			st = filesBad
		}
		return wrap(t.line, width, st)
	}
	done, total := t.verified.Load(), t.total.Load()
	pct := 0.0
	if total > 0 {
		pct = float64(done) / float64(total)
	}
	verb := "fetching"
	if t.resuming {
		verb = "resuming"
	}
	figures := fmt.Sprintf(" %3.0f%%  %s / %s", pct*100, filewords.Size(done), filewords.Size(total))
	v.bar.SetWidth(max(10, min(40, width-lipgloss.Width(figures)-1)))
	return []string{
		verb + " " + cleanLine(t.name) + " from " + cleanLine(t.handle),
		v.bar.ViewAs(pct) + figures,
	}
}

// wrap breaks s into lines of at most width cells (styled with st).
func wrap(s string, width int, st lipgloss.Style) []string {
	out := strings.Split(ansi.Wrap(s, width, " "), "\n")
	for i, l := range out {
		out[i] = st.Render(l)
	}
	return out
}
