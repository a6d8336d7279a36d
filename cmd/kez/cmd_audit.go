package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/kez-lat/kez-chat/ratelimit"
	"github.com/kez-lat/kez-chat/translog/audit"
)

// auditFileName is the audit's state in the state folder.
const auditFileName = "audit.db"

func init() {
	register(&command{
		name:    "audit",
		args:    "[--server URL] [--follow] [--interval D] [--json] [--home DIR] [--verbose]",
		summary: "check a sig-server's transparency log against the chains it serves",
		help: `
Audits the transparency log of a sig-server: reads every entry the log
gained since the last audit, checks that the log only grew (its entries
hash to the root of its signed checkpoint, extending what was audited
before), that it logs one link per position of each chain and skips
none, and that the chain the sig-server serves for each key it touched
has every link the log has, and verifies. It resumes where the last audit
stopped: its state is audit.db in your state folder.

It prints one sentence a run ("Audited entries 1–1,234 of log
kez.lat/sigchain-log: 412 chains, no problems.") and one a finding; a
deleted chain (an unused identity the server collected) is a notice, not
a problem. The exit status is 1 when it found a problem.

--server URL is the sig-server to audit (default: KEZ_SIG_SERVER, else
the one in your profile, else the one your chat-server names); no
account is needed with it. --follow audits again every --interval
(default 1m) until Ctrl-C, and stops at the first run that finds a
problem. --json prints one object a run: {"server","origin","from","to",
"entries","chains","checkpoint","findings":[{"kind","key","seqno",
"index","detail"}]} (entries from and to: log indices [from, to)).
--verbose prints progress.`,
		flags: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			var home, server string
			var follow, asJSON, verbose bool
			interval := time.Minute
			fs.StringVar(&home, "home", "", homeFlagHelp)
			fs.StringVar(&server, "server", "", "the sig-server to audit (env KEZ_SIG_SERVER; default: the one in your profile)")
			fs.BoolVar(&follow, "follow", false, "audit again every --interval until Ctrl-C")
			fs.DurationVar(&interval, "interval", interval, "with --follow, the time between audits")
			fs.BoolVar(&asJSON, "json", false, "print JSON")
			fs.BoolVar(&verbose, "verbose", false, "print progress")
			return func(ctx context.Context, args []string) error {
				if len(args) != 0 {
					return usagef("audit takes no arguments, got %d", len(args))
				}
				if interval <= 0 {
					return usagef("--interval must be positive")
				}
				return runAudit(ctx, e, home, server, follow, interval, asJSON, verbose)
			}
		},
	})
}

// auditJSON is one run of "kez audit --json"; fields may be added.
type auditJSON struct {
	Server     string         `json:"server"`
	Origin     string         `json:"origin"`
	From       uint64         `json:"from"`
	To         uint64         `json:"to"`
	Entries    int            `json:"entries"`
	Chains     int            `json:"chains"`
	Checkpoint string         `json:"checkpoint"`
	Findings   []auditFinding `json:"findings"`
}

type auditFinding struct {
	Kind   string `json:"kind"`
	Key    string `json:"key"`
	Seqno  uint64 `json:"seqno"`
	Index  uint64 `json:"index"`
	Detail string `json:"detail"`
}

func runAudit(ctx context.Context, e *env, homeFlag, server string, follow bool, interval time.Duration, asJSON, verbose bool) error {
	home, err := e.home(homeFlag)
	if err != nil {
		return err
	}
	server = strings.TrimRight(e.envOr(server, "KEZ_SIG_SERVER"), "/")
	if server == "" {
		prof, err := loadProfile(home)
		if err != nil {
			return err
		}
		srv, err := e.settleServers(ctx, serverFlags{}, prof, false)
		if err != nil {
			return err
		}
		if server = srv.sigServer; server == "" {
			return worded(nil, "no sig-server to audit: pass --server URL, or set KEZ_SIG_SERVER")
		}
	}
	if err := os.MkdirAll(home, 0o700); err != nil {
		return err
	}
	c := audit.Config{Server: server, HTTPClient: httpClient, State: filepath.Join(home, auditFileName), Logger: e.logger(verbose)}
	for {
		sum, err := audit.Run(ctx, c)
		if follow && ctx.Err() != nil {
			return nil // Ctrl-C
		}
		if sum != nil {
			printAudit(e.stdout, server, sum, asJSON)
		}
		if err != nil {
			return auditErr(server, err)
		}
		if n := sum.Problems(); n > 0 {
			return worded(nil, "the audit of the log of %s found %s", server, plural(n, "problem"))
		}
		if !follow {
			return nil
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// auditErr words an error of audit.Run.
func auditErr(server string, err error) error {
	var ae *audit.AnswerError
	switch {
	case errors.Is(err, audit.ErrNoLog):
		return worded(err, "the sig-server at %s keeps no transparency log, so there is nothing to audit", server)
	case errors.Is(err, audit.ErrUnreachable):
		return worded(err, "cannot reach the sig-server at %s: check that it is running and that --server (or KEZ_SIG_SERVER) names it, then run the audit again", server)
	case errors.Is(err, ratelimit.ErrLimited):
		return worded(err, "the sig-server at %s asks to wait too long before it answers again (%v); run the audit again later", server, err)
	case errors.Is(err, audit.ErrBusy):
		return worded(err, "another audit of the log of %s was running at the same time; run this one again", server)
	case errors.As(err, &ae):
		return worded(err, "the sig-server at %s answered GET %s with %d (%s), which the audit cannot use; it recorded what it had checked before", server, ae.Path, ae.StatusCode, ae.Reason)
	}
	return err
}

// plural returns "1 problem" or "n problems", n grouped by thousands.
func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return grouped(uint64(n)) + " " + what + "s"
}

// grouped writes n with commas between groups of three digits.
func grouped(n uint64) string {
	s := strconv.FormatUint(n, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func printAudit(w io.Writer, server string, s *audit.Summary, asJSON bool) {
	if asJSON {
		o := auditJSON{Server: server, Origin: s.Origin, From: s.From, To: s.To, Entries: s.Entries, Chains: s.Keys,
			Checkpoint: string(s.Checkpoint), Findings: []auditFinding{}}
		for _, f := range s.Findings {
			af := auditFinding{Kind: f.Kind, Seqno: f.Seqno, Index: f.Index, Detail: f.Detail}
			if !f.Key.IsZero() {
				af.Key = f.Key.String()
			}
			o.Findings = append(o.Findings, af)
		}
		json.NewEncoder(w).Encode(o)
		return
	}
	verdict := "no problems."
	if n := s.Problems(); n > 0 {
		verdict = plural(n, "problem") + ":"
	}
	switch {
	case s.Entries > 0:
		fmt.Fprintf(w, "Audited entries %s–%s of log %s: %s, %s\n", grouped(s.From+1), grouped(s.To), s.Origin, plural(s.Keys, "chain"), verdict)
	default:
		fmt.Fprintf(w, "No new entries in log %s since the last audit (%s audited): %s, %s\n", s.Origin, grouped(s.To), plural(s.Keys, "chain"), verdict)
	}
	inconsistent := false
	for _, f := range s.Findings {
		fmt.Fprintf(w, "  %s\n", findingSentence(f))
		inconsistent = inconsistent || f.Kind == audit.KindInconsistent
	}
	if inconsistent && len(s.Checkpoint) > 0 {
		fmt.Fprintf(w, "The checkpoint the sig-server signed (keep it as evidence):\n%s", s.Checkpoint)
	}
}

// findingSentence says what a finding means.
func findingSentence(f audit.Finding) string {
	switch f.Kind {
	case audit.KindInconsistent:
		return "The log is not the one audited before: " + f.Detail + ". Nothing of this run was recorded."
	case audit.KindFork:
		return fmt.Sprintf("The log has two links at seqno %d of the chain of %s: %s.", f.Seqno, f.Key, f.Detail)
	case audit.KindGap:
		return fmt.Sprintf("The log skips links of the chain of %s: %s.", f.Key, f.Detail)
	case audit.KindMismatch:
		return fmt.Sprintf("The sig-server serves another chain for %s than its log shows: %s.", f.Key, f.Detail)
	case audit.KindHidden:
		return fmt.Sprintf("The sig-server hides links of the chain of %s that its log has: %s.", f.Key, f.Detail)
	case audit.KindBadChain:
		return fmt.Sprintf("The sig-server serves a chain for %s that does not verify: %s.", f.Key, f.Detail)
	case audit.KindBadEntry:
		return fmt.Sprintf("Entry %d of the log is not a valid entry: %s.", f.Index, f.Detail)
	case audit.KindDeleted:
		return fmt.Sprintf("Notice: the sig-server deleted the chain of %s (entry %d); its history starts again at seqno 1.", f.Key, f.Index)
	}
	return fmt.Sprintf("%s: %s (entry %d).", f.Kind, f.Detail, f.Index)
}
