package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/sigchain"
)

func init() {
	register(&command{
		name:    "register",
		args:    "NAME [--server URL] [--sig-server URL] [--home DIR]",
		summary: "claim your handle NAME@domain at your chat server",
		help: `
Registers your identity under a handle: it appends the first link of your
sigchain (your key, your encryption key and the handle) to the sig-server,
then claims NAME@DOMAIN at the chat-server with a signature of your key.
DOMAIN is the domain the chat-server registers; it tells it itself.

NAME is 2 to 32 lower-case letters, digits, ".", "-" or "_". The server
refuses a taken name and its look-alikes (b0b for bob, a1ice for alice,
rnallory for mallory, al.ice for alice): choose another. Running register
again with the same name changes nothing.

The chat-server is --server, else KEZ_SERVER, else the one you registered
at. The sig-server is --sig-server, else KEZ_SIG_SERVER, else the one the
chat-server names. Both are remembered in the profile in your state folder.`,
		flags: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			var home string
			var sf serverFlags
			fs.StringVar(&home, "home", "", homeFlagHelp)
			sf.declare(fs)
			return func(ctx context.Context, args []string) error {
				if len(args) != 1 {
					return usagef("register takes one NAME, got %d arguments", len(args))
				}
				return runRegister(ctx, e, home, sf, args[0])
			}
		},
	})
}

// serverFlags are the --server and --sig-server flags of the commands that
// talk to the servers.
type serverFlags struct{ server, sigServer string }

func (f *serverFlags) declare(fs *flag.FlagSet) {
	fs.StringVar(&f.server, "server", "", "chat-server base URL (env KEZ_SERVER; default: the one in your profile)")
	fs.StringVar(&f.sigServer, "sig-server", "", "sig-server base URL (env KEZ_SIG_SERVER; default: the one in your profile, or the chat-server's)")
}

// servers are the settled server addresses of a command.
type servers struct {
	server    string // chat-server base URL; "" if none is known
	sigServer string // sig-server base URL; "" if none is known
	domain    string // the home domain; "" if none is known
	info      *handles.Info
}

// httpClient is the client of every server request the CLI makes.
var httpClient = &http.Client{Timeout: 20 * time.Second}

// settleServers works out the chat-server (flag, KEZ_SERVER, profile), the
// sig-server (flag, KEZ_SIG_SERVER, profile, the chat-server's /v1/info)
// and the home domain (the chat-server's /v1/info when askInfo, else
// KEZ_DOMAIN, the profile, then /v1/info).
func (e *env) settleServers(ctx context.Context, f serverFlags, prof *profile, askInfo bool) (servers, error) {
	s := servers{
		server:    strings.TrimRight(e.envOr(f.server, "KEZ_SERVER"), "/"),
		sigServer: strings.TrimRight(e.envOr(f.sigServer, "KEZ_SIG_SERVER"), "/"),
		domain:    e.getenv("KEZ_DOMAIN"),
	}
	fromProfile := s.server == "" || s.server == prof.Server
	if s.server == "" {
		s.server = prof.Server
	}
	if s.sigServer == "" && fromProfile {
		s.sigServer = prof.SigServer
	}
	if s.domain == "" && fromProfile {
		s.domain = prof.Domain
	}
	e.srv = s // what is known so far, for wording an error
	if s.server != "" && (askInfo || s.sigServer == "" || s.domain == "") {
		info, err := (&handles.Client{BaseURL: s.server, HTTPClient: httpClient}).Info(ctx)
		switch {
		case err == nil:
			s.info = info
			if askInfo || s.domain == "" {
				s.domain = info.Domain
			}
			if s.sigServer == "" {
				s.sigServer = info.SigServer
			}
		case errors.Is(err, handles.ErrNotFound) && s.domain != "":
			// An older server without /v1/info: KEZ_DOMAIN says the domain.
		default:
			if errors.Is(err, handles.ErrNotFound) {
				return s, worded(err, "%s does not answer as a KEZ chat-server (no /v1/info): check KEZ_SERVER (or --server), or set KEZ_DOMAIN for an older server", s.server)
			}
			return s, err
		}
	}
	e.srv = s
	return s, nil
}

// isLocalDomain reports whether d is a development domain (IP, port,
// localhost), which only a server the user chose may have.
func isLocalDomain(d string) bool {
	_, err := handles.ParseDomain(d, false)
	return handles.ReasonOf(err) == handles.ReasonLocalDomain
}

// localDomains returns the domains KEZ_LOCAL_DOMAINS marks local
// (comma-separated): their servers may be plain http on this machine or a
// private network. Every other domain's servers must be public https.
func (e *env) localDomains() []string {
	var out []string
	for _, d := range strings.Split(e.getenv("KEZ_LOCAL_DOMAINS"), ",") {
		if d = strings.ToLower(strings.TrimSpace(d)); d != "" {
			out = append(out, d)
		}
	}
	return out
}

// allowLocal reports whether development handles (IP, port, localhost)
// are accepted: when the home domain is one, or a domain is marked local.
func (e *env) allowLocal(home string) bool {
	return (home != "" && isLocalDomain(home)) || len(e.localDomains()) > 0
}

func runRegister(ctx context.Context, e *env, homeFlag string, sf serverFlags, name string) error {
	acct, err := e.loadAccount(homeFlag)
	if err != nil {
		return err
	}
	id, err := acct.primary("kez register")
	if err != nil {
		return err
	}
	home, prof := acct.home, acct.prof
	srv, err := e.settleServers(ctx, sf, prof, true)
	if err != nil {
		return err
	}
	switch {
	case srv.server == "":
		return errors.New("no chat-server given: set KEZ_SERVER (or pass --server) to your chat-server's URL")
	case srv.sigServer == "":
		return errors.New("no sig-server given: set KEZ_SIG_SERVER (or pass --sig-server) to your sig-server's URL")
	case srv.domain == "":
		return fmt.Errorf("the chat-server at %s does not say which domain it serves: set KEZ_DOMAIN", srv.server)
	}

	h, err := handles.Rules{DefaultDomain: srv.domain, AllowLocal: isLocalDomain(srv.domain)}.Parse(name)
	if err != nil {
		return err
	}
	if h.Domain != srv.domain {
		return fmt.Errorf("%s is not a handle of the chat-server at %s, which registers @%s; run \"kez register %s\"", h.Display(), srv.server, srv.domain, h.Name)
	}
	if err := handles.CheckClaimable(h); err != nil {
		return err
	}
	key := id.PublicKey()
	if held := prof.handleFor(key); held != "" && held != h.String() {
		return fmt.Errorf("this identity is already registered as @%s; a key holds one handle", held)
	}

	reg, err := handles.Register(ctx, id, h, handles.RegisterOptions{ServerURL: srv.server, SigServerURL: srv.sigServer, HTTPClient: httpClient})
	if reg != nil && reg.Appended != nil {
		fmt.Fprintf(e.stdout, "Appended link #%d (%s) to your sigchain at %s.\n", reg.Appended.Seqno(), reg.Appended.Type(), srv.sigServer)
	}
	switch {
	case errors.Is(err, handles.ErrTaken) || errors.Is(err, handles.ErrSuspended):
		if reg != nil && reg.Chain != nil && reg.Chain.Handle() == h.String() {
			// The claim was refused (a look-alike of a taken name) and
			// taking the name back out of the chain failed too.
			return worded(err, "%v; and your sigchain still names it: run \"kez register\" with another name to replace it", takenError(h, err))
		}
		return takenError(h, err)
	case errors.Is(err, handles.ErrKeyHasHandle):
		if reg != nil && reg.Chain != nil && reg.Chain.Handle() != "" && reg.Chain.Handle() != h.String() {
			return fmt.Errorf("your sigchain already names @%s as your handle; kez register cannot change a handle", reg.Chain.Handle())
		}
		return worded(err, "your key already holds another handle at %s: a key holds one handle", srv.server)
	case errors.Is(err, sigchain.ErrConflict):
		return worded(err, "your sigchain changed while registering (another device?): run \"kez register\" again")
	case errors.Is(err, handles.ErrRateLimited):
		return rateLimitedError(err, reg, h)
	case errors.Is(err, sigchain.ErrChainFull):
		return worded(err, "your sigchain at %s is as large as that sig-server allows, so it takes no new link: ask its operator", srv.sigServer)
	case err != nil:
		return err
	}

	prof.Key, prof.Handle, prof.Domain = key.String(), h.String(), h.Domain
	prof.Server, prof.SigServer = srv.server, srv.sigServer
	if err := saveProfile(home, prof); err != nil {
		return err
	}
	if reg.Created {
		fmt.Fprintf(e.stdout, "Claimed %s at %s.\n\n", h.Display(), srv.server)
	} else {
		fmt.Fprintf(e.stdout, "%s is already yours; nothing changed.\n\n", h.Display())
	}
	printIdentity(e.stdout, h.String(), key)
	return nil
}

// rateLimitedError words a 429 from either server: how long to wait,
// and that registering again then finishes the job.
func rateLimitedError(err error, reg *handles.Registration, h handles.Handle) error {
	var rl *handles.RateLimitedError
	errors.As(err, &rl)
	wait := "later"
	if rl != nil && rl.RetryAfter > 0 {
		wait = "in " + waitWords(rl.RetryAfter)
	}
	msg := "the server refused: too many requests from your address or key"
	if reg != nil && reg.Chain != nil && reg.Chain.Handle() == h.String() {
		return worded(err, "%s; your sigchain already names %s, so running \"kez register %s\" again %s finishes the registration", msg, h.Display(), h.Name, wait)
	}
	return worded(err, "%s; try again %s", msg, wait)
}

// waitWords says a wait the way people do: "45 seconds", "12 minutes",
// "about 2 hours".
func waitWords(d time.Duration) string {
	plural := func(n int64, unit string) string {
		if n == 1 {
			return "1 " + unit
		}
		return strconv.FormatInt(n, 10) + " " + unit + "s"
	}
	switch {
	case d < time.Minute:
		return plural(max(1, int64(math.Ceil(d.Seconds()))), "second")
	case d < time.Hour:
		return plural(int64(math.Ceil(d.Minutes())), "minute")
	}
	return "about " + plural(int64(math.Round(d.Hours())), "hour")
}

// takenError words a refusal of h as taken: the name itself, or a
// look-alike of a handle someone else holds (err's *handles.TakenError).
func takenError(h handles.Handle, err error) error {
	var te *handles.TakenError
	if errors.As(err, &te) && te.LookAlike() {
		return worded(err, "%s looks too much like %s, which someone else has registered; choose another name", h, te.Holder)
	}
	if errors.Is(err, handles.ErrSuspended) {
		return worded(err, "%s is suspended by the operator; choose another name", h)
	}
	return worded(err, "%s is taken; choose another name", h)
}
