package main

import (
	"flag"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/internal/servercmd"
)

// loginFlags are the flags of the auth callout's flood limits
// (callout.LoginLimits) and its workers, each with its environment twin.
type loginFlags struct {
	ints  []twin[int]
	durs  []twin[time.Duration]
	limit callout.LoginLimits
	work  int
}

// twin is a flag and its environment twin, read by servercmd.Env.Int or
// servercmd.Env.Duration.
type twin[T int | time.Duration] struct {
	name, env string
	v         *T
	read      func(servercmd.Env, *flag.FlagSet, string, string, *T) error
}

// apply sets the flag from its environment twin unless the flag was given
// (flags win), and checks that it is not negative.
func (x twin[T]) apply(fs *flag.FlagSet, env servercmd.Env) error {
	if err := x.read(env, fs, x.name, x.env, x.v); err != nil {
		return err
	}
	if *x.v < 0 {
		return servercmd.Usagef("--%s %v: want 0 or more", x.name, *x.v)
	}
	return nil
}

// declareLoginFlags declares the --login-… flags on fs.
func declareLoginFlags(fs *flag.FlagSet) *loginFlags {
	f := &loginFlags{}
	l := &f.limit
	i := func(p *int, name, env string, def int, usage string) {
		fs.IntVar(p, name, def, usage+" (env "+env+")")
		f.ints = append(f.ints, twin[int]{name, env, p, servercmd.Env.Int})
	}
	d := func(p *time.Duration, name, env string, def time.Duration, usage string) {
		fs.DurationVar(p, name, def, usage+" (env "+env+")")
		f.durs = append(f.durs, twin[time.Duration]{name, env, p, servercmd.Env.Duration})
	}
	i(&f.work, "login-workers", "KEZ_CHAT_LOGIN_WORKERS", 0, "NATS logins the auth callout decides at once; 0: twice the CPUs")
	i(&l.MaxQueued, "login-queue", "KEZ_CHAT_LOGIN_QUEUE", callout.DefaultMaxQueued, "logins waiting for a worker, per lane; more are dropped (NATS refuses them)")
	i(&l.KnownBurst, "login-known-burst", "KEZ_CHAT_LOGIN_KNOWN_BURST", callout.DefaultKnownBurst, "logins at once a key may make ahead of the rest from an address it logged in from before")
	d(&l.KnownEvery, "login-known-every", "KEZ_CHAT_LOGIN_KNOWN_EVERY", callout.DefaultKnownEvery, "then one such login per this time")
	i(&l.MaxKnown, "login-known-max", "KEZ_CHAT_LOGIN_KNOWN_MAX", callout.DefaultMaxKnown, "key and address pairs remembered for that")
	i(&l.BackoffAfter, "login-backoff-after", "KEZ_CHAT_LOGIN_BACKOFF_AFTER", callout.DefaultBackoffAfter, "failed logins from one address answered at once; later ones wait")
	d(&l.BackoffBase, "login-backoff-base", "KEZ_CHAT_LOGIN_BACKOFF_BASE", callout.DefaultBackoffBase, "the first wait, doubling with each further failure")
	d(&l.BackoffMax, "login-backoff-max", "KEZ_CHAT_LOGIN_BACKOFF_MAX", callout.DefaultBackoffMax, "the longest wait; a longer one is not answered (NATS refuses at its auth timeout); 0 turns the backoff off")
	d(&l.BackoffWindow, "login-backoff-window", "KEZ_CHAT_LOGIN_BACKOFF_WINDOW", callout.DefaultBackoffWindow, "an address's failures are forgotten after this quiet time")
	i(&l.MaxHeld, "login-max-held", "KEZ_CHAT_LOGIN_MAX_HELD", callout.DefaultMaxHeld, "denials waiting at once; more are not answered")
	i(&l.MaxAddresses, "login-max-addresses", "KEZ_CHAT_LOGIN_MAX_ADDRESSES", callout.DefaultMaxAddresses, "failing addresses remembered")
	d(&l.SummaryEvery, "login-summary-every", "KEZ_CHAT_LOGIN_SUMMARY_EVERY", callout.DefaultSummaryEvery, "how often refused logins are summed up in one INFO line (each is logged at DEBUG)")
	return f
}

// limits applies the environment twins of the flags not given on the
// command line (flags win) and returns the limits and the workers. Call it
// after parsing; a bad value is a servercmd.UsageError.
func (f *loginFlags) limits(fs *flag.FlagSet, env servercmd.Env) (callout.LoginLimits, int, error) {
	for _, x := range f.ints {
		if err := x.apply(fs, env); err != nil {
			return callout.LoginLimits{}, 0, err
		}
	}
	for _, x := range f.durs {
		if err := x.apply(fs, env); err != nil {
			return callout.LoginLimits{}, 0, err
		}
	}
	l := f.limit
	if l.BackoffMax == 0 {
		l.BackoffMax = -1 // off
	} else if l.BackoffBase > l.BackoffMax {
		return callout.LoginLimits{}, 0, servercmd.Usagef("--login-backoff-base %s is longer than --login-backoff-max %s", l.BackoffBase, l.BackoffMax)
	}
	for _, x := range []struct {
		name string
		v    int
	}{{"login-queue", l.MaxQueued}, {"login-known-burst", l.KnownBurst}, {"login-known-max", l.MaxKnown},
		{"login-backoff-after", l.BackoffAfter}, {"login-max-held", l.MaxHeld}, {"login-max-addresses", l.MaxAddresses}} {
		if x.v == 0 {
			return callout.LoginLimits{}, 0, servercmd.Usagef("--%s 0: want at least 1", x.name)
		}
	}
	for _, x := range []struct {
		name string
		v    time.Duration
	}{{"login-known-every", l.KnownEvery}, {"login-backoff-base", l.BackoffBase}, {"login-backoff-window", l.BackoffWindow}, {"login-summary-every", l.SummaryEvery}} {
		if x.v == 0 {
			return callout.LoginLimits{}, 0, servercmd.Usagef("--%s 0: want a positive duration", x.name)
		}
	}
	return l, f.work, nil
}
