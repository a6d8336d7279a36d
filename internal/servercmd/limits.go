package servercmd

import (
	"flag"
	"fmt"
	"net/netip"
	"time"

	"github.com/kez-lat/kez-chat/ratelimit"
)

// limitValue is a flag.Value of a rate limit.
type limitValue struct{ l *ratelimit.Limit }

func (v limitValue) String() string {
	if v.l == nil {
		return ""
	}
	return v.l.String()
}

func (v limitValue) Set(s string) error {
	l, err := ratelimit.ParseLimit(s)
	if err != nil {
		return err
	}
	*v.l = l
	return nil
}

// LimitVar declares a rate-limit flag: "N/PERIOD" (e.g. 10/1h: ten at
// once and ten an hour) or "off".
func LimitVar(fs *flag.FlagSet, p *ratelimit.Limit, name string, def ratelimit.Limit, usage string) {
	*p = def
	fs.Var(limitValue{p}, name, usage)
}

// Limit sets *v from the variable name unless the flag flagName was given
// on the command line or the variable is empty. Call it after parsing. A
// value that is not a limit is a [UsageError].
func (e Env) Limit(fs *flag.FlagSet, flagName, name string, v *ratelimit.Limit) error {
	return envValue(e, fs, flagName, name, v, ratelimit.ParseLimit, "N/PERIOD (e.g. 10/1h) or off")
}

// LimitFlag is one rate-limit flag of a server, for [DeclareLimits] and
// [Env.Limits].
type LimitFlag struct {
	Name, Env string           // the flag and its environment twin
	Limit     *ratelimit.Limit // where the value goes
	Default   ratelimit.Limit
	Usage     string // what the limit bounds; the format and the twin are added
}

// DeclareLimits declares the flags on fs.
func DeclareLimits(fs *flag.FlagSet, flags []LimitFlag) {
	for _, f := range flags {
		LimitVar(fs, f.Limit, f.Name, f.Default, f.Usage+": N/PERIOD, N at once and N per PERIOD, or off (env "+f.Env+")")
	}
}

// Limits sets each flag's limit from its environment twin unless the flag
// was given ([Env.Limit]). Call it after parsing.
func (e Env) Limits(fs *flag.FlagSet, flags []LimitFlag) error {
	for _, f := range flags {
		if err := e.Limit(fs, f.Name, f.Env, f.Limit); err != nil {
			return err
		}
	}
	return nil
}

// Duration sets *v from the variable name unless the flag flagName was
// given on the command line or the variable is empty. Call it after
// parsing. A value that is not a Go duration is a [UsageError].
func (e Env) Duration(fs *flag.FlagSet, flagName, name string, v *time.Duration) error {
	return envValue(e, fs, flagName, name, v, time.ParseDuration, "a duration such as 24h or 30m")
}

// ClientIPFlags are a server's --trusted-proxies flag and the limiters'
// table size, --limit-max-keys.
type ClientIPFlags struct {
	proxies string
	maxKeys int
	prefix  string
	env     Env
}

// Declare declares the flags on fs, with defaults from the environment
// twins prefix+"_TRUSTED_PROXIES" and prefix+"_LIMIT_MAX_KEYS".
func (c *ClientIPFlags) Declare(fs *flag.FlagSet, env Env, prefix string) {
	c.prefix, c.env = prefix, env
	fs.StringVar(&c.proxies, "trusted-proxies", env.Or(prefix+"_TRUSTED_PROXIES", ""),
		"comma-separated addresses or CIDR prefixes of the reverse proxies in front of this server, whose X-Forwarded-For is believed; none by default, so the client address is the TCP peer (env "+prefix+"_TRUSTED_PROXIES)")
	fs.IntVar(&c.maxKeys, "limit-max-keys", ratelimit.DefaultMaxKeys,
		"client addresses or keys each rate limit tracks at most, forgetting the least recently seen beyond (env "+prefix+"_LIMIT_MAX_KEYS)")
}

// Parse reads the flags (after fs is parsed): the client address rule
// and the table size.
func (c *ClientIPFlags) Parse(fs *flag.FlagSet) (ratelimit.ClientIP, int, error) {
	if err := c.env.Int(fs, "limit-max-keys", c.prefix+"_LIMIT_MAX_KEYS", &c.maxKeys); err != nil {
		return ratelimit.ClientIP{}, 0, err
	}
	if c.maxKeys < 1 {
		return ratelimit.ClientIP{}, 0, Usagef("--limit-max-keys %d: want at least 1", c.maxKeys)
	}
	p, err := ratelimit.ParsePrefixes(c.proxies)
	if err != nil {
		return ratelimit.ClientIP{}, 0, Usagef("--trusted-proxies: %w", err)
	}
	return ratelimit.ClientIP{TrustedProxies: p}, c.maxKeys, nil
}

// ProxiesString formats trusted proxies for a log line.
func ProxiesString(p []netip.Prefix) string {
	if len(p) == 0 {
		return "none"
	}
	return fmt.Sprint(p)
}
