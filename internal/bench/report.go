package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// Goal is how a figure's target reads.
type Goal string

// Goals.
const (
	// MinRatio: the figure over its baseline must be at least Target.
	MinRatio Goal = "min_ratio"
	// MaxRatio: the figure over its baseline must be at most Target.
	MaxRatio Goal = "max_ratio"
	// MaxValue: the figure itself must be at most Target (in its unit).
	MaxValue Goal = "max_value"
	// MinValue: the figure itself must be at least Target (in its unit).
	MinValue Goal = "min_value"
	// NoTarget: the figure is reported for context only.
	NoTarget Goal = ""
)

// Figure is one measured figure beside the baseline measured in the same
// run.
type Figure struct {
	Group    string  `json:"group"`           // one of Groups
	Name     string  `json:"name"`            // what was measured
	Unit     string  `json:"unit"`            // msgs/s, µs, ms, s, connects/s, links/s, MB/s, MiB, KiB
	Value    float64 `json:"value"`           // the figure
	Baseline string  `json:"baseline"`        // what it is compared with
	Base     float64 `json:"baseline_value"`  // the baseline, same unit (0: none)
	Ratio    float64 `json:"ratio,omitempty"` // Value/Base (0 when there is no baseline)
	Goal     Goal    `json:"goal,omitempty"`
	Target   float64 `json:"target,omitempty"`
	// Pass is set when there is a target: whether the figure meets it.
	Pass *bool `json:"pass,omitempty"`
	// CPURatio is the baseline's CPU per operation over the figure's, all
	// of the stack's processes counted (0: not measured). On a shared
	// machine it is steadier than Ratio, and it is what Ratio tends to when
	// the machine is CPU-bound and the stack has it to itself.
	CPURatio float64 `json:"cpu_ratio,omitempty"`
	// Skipped says why the figure could not be measured (Value is 0).
	Skipped string `json:"skipped,omitempty"`
	Note    string `json:"note,omitempty"`
}

func (f *Figure) finish() {
	if f.Skipped != "" {
		return
	}
	if f.Base > 0 {
		f.Ratio = f.Value / f.Base
	}
	var ok bool
	switch f.Goal {
	case MinRatio:
		ok = f.Base > 0 && f.Ratio >= f.Target
	case MaxRatio:
		ok = f.Base > 0 && f.Ratio <= f.Target
	case MaxValue:
		ok = f.Value <= f.Target
	case MinValue:
		ok = f.Value >= f.Target
	default:
		return
	}
	f.Pass = &ok
}

// Machine describes where a report was made.
type Machine struct {
	OS        string `json:"os"`
	Arch      string `json:"arch"`
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model,omitempty"`
	GoVersion string `json:"go_version"`
}

// Report is the outcome of [Run]: every figure, in the order measured.
type Report struct {
	Started  time.Time     `json:"started"`
	Duration time.Duration `json:"duration_ns"`
	Machine  Machine       `json:"machine"`
	Config   Config        `json:"config"`
	Stack    string        `json:"stack"` // "own" or "external"
	Figures  []Figure      `json:"figures"`
}

// Failed returns the figures that have a target and miss it.
func (r *Report) Failed() []Figure {
	var out []Figure
	for _, f := range r.Figures {
		if f.Pass != nil && !*f.Pass {
			out = append(out, f)
		}
	}
	return out
}

// Figure returns the figure of this group and name, or nil.
func (r *Report) Figure(group, name string) *Figure {
	for i := range r.Figures {
		if r.Figures[i].Group == group && r.Figures[i].Name == name {
			return &r.Figures[i]
		}
	}
	return nil
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes the report as an aligned text table: figure, value,
// baseline, ratio, target and pass/fail.
func (r *Report) WriteTable(w io.Writer) error {
	m := r.Machine
	fmt.Fprintf(w, "KEZ bench, %s, %s/%s, %d CPUs%s, %s, %s stack, %.0f s\n\n",
		r.Started.UTC().Format("2006-01-02 15:04 MST"), m.OS, m.Arch, m.CPUs,
		cond(m.CPUModel != "", " ("+m.CPUModel+")", ""), m.GoVersion, r.Stack, r.Duration.Seconds())
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "group\tfigure\tvalue\tbaseline\tratio\tcpu ratio\ttarget\tresult")
	for _, f := range r.Figures {
		if f.Skipped != "" {
			fmt.Fprintf(tw, "%s\t%s\t-\t%s\t-\t-\t%s\tskipped: %s\n", f.Group, f.Name, f.Baseline, targetText(f), f.Skipped)
			continue
		}
		base := f.Baseline
		if f.Base > 0 {
			base += " " + num(f.Base) + " " + f.Unit
		}
		ratio := "-"
		if f.Ratio > 0 {
			ratio = fmt.Sprintf("%.2f", f.Ratio)
		}
		cpuRatio := "-"
		if f.CPURatio > 0 {
			cpuRatio = fmt.Sprintf("%.2f", f.CPURatio)
		}
		result := ""
		if f.Pass != nil {
			result = cond(*f.Pass, "pass", "FAIL")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s %s\t%s\t%s\t%s\t%s\t%s\n", f.Group, f.Name, num(f.Value), f.Unit, base, ratio, cpuRatio, targetText(f), result)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var notes []string
	for _, f := range r.Figures {
		if f.Note != "" {
			notes = append(notes, fmt.Sprintf("  %s %s: %s", f.Group, f.Name, f.Note))
		}
	}
	if len(notes) > 0 {
		fmt.Fprintf(w, "\nnotes:\n%s\n", strings.Join(notes, "\n"))
	}
	return nil
}

func targetText(f Figure) string {
	switch f.Goal {
	case MinRatio:
		if f.Target >= 2 {
			return fmt.Sprintf("≥ %g×", f.Target)
		}
		return fmt.Sprintf("≥ %.2f", f.Target)
	case MaxRatio:
		return fmt.Sprintf("≤ %.2f", f.Target)
	case MaxValue:
		return fmt.Sprintf("≤ %s %s", num(f.Target), f.Unit)
	case MinValue:
		return fmt.Sprintf("≥ %s %s", num(f.Target), f.Unit)
	}
	return "-"
}

// num formats a figure with three significant digits at most, grouping
// thousands.
func num(v float64) string {
	switch {
	case v == 0:
		return "0"
	case math.Abs(v) >= 1000:
		s := fmt.Sprintf("%.0f", v)
		var b strings.Builder
		for i, c := range s {
			if i > 0 && (len(s)-i)%3 == 0 {
				b.WriteByte(',')
			}
			b.WriteRune(c)
		}
		return b.String()
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func cond[T any](c bool, a, b T) T {
	if c {
		return a
	}
	return b
}

func thisMachine() Machine {
	m := Machine{OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}
