package claims

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/miekg/dns"
)

// resolvConf is where the default DNS server is read.
const resolvConf = "/etc/resolv.conf"

// dnsServerAddr returns the DNS server to ask: DNSServer, or the first
// nameserver of /etc/resolv.conf.
func (c *Checker) dnsServerAddr() (string, error) {
	if c.DNSServer != "" {
		return c.DNSServer, nil
	}
	c.dnsOnce.Do(func() {
		cfg, err := dns.ClientConfigFromFile(resolvConf)
		switch {
		case err != nil:
			c.dnsErr = fmt.Errorf("%w: no DNS server: %w", ErrUnavailable, err)
		case len(cfg.Servers) == 0:
			c.dnsErr = fmt.Errorf("%w: no DNS server", ErrUnavailable)
		default:
			c.dnsServer = net.JoinHostPort(cfg.Servers[0], cfg.Port)
		}
	})
	return c.dnsServer, c.dnsErr
}

// checkDNS looks for text among the TXT records of _kez.<name>, each
// record's strings concatenated.
func (c *Checker) checkDNS(ctx context.Context, name, text string) error {
	txts, err := c.lookupTXT(ctx, "_kez."+name)
	if err != nil {
		return err
	}
	for _, t := range txts {
		if t == text {
			return nil
		}
	}
	return fmt.Errorf("%w: no TXT record of _kez.%s holds the statement", ErrNotFound, name)
}

// lookupTXT asks the DNS server for the TXT records of name: over UDP,
// then over TCP if the answer was truncated.
func (c *Checker) lookupTXT(ctx context.Context, name string) ([]string, error) {
	server, err := c.dnsServerAddr()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, DNSTimeout)
	defer cancel()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeTXT)
	m.SetEdns0(1232, false)
	cl := &dns.Client{Net: "udp", Timeout: DNSTimeout}
	r, _, err := cl.ExchangeContext(ctx, m, server)
	if err == nil && r.Truncated {
		cl.Net = "tcp"
		r, _, err = cl.ExchangeContext(ctx, m, server)
	}
	if err != nil {
		if ctx.Err() != nil && !errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w: %w", err, ctx.Err())
		}
		return nil, fmt.Errorf("%w: the DNS query for %s: %w", ErrUnavailable, name, err)
	}
	switch r.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		return nil, fmt.Errorf("%w: %s does not exist", ErrNotFound, name)
	default:
		return nil, fmt.Errorf("%w: the DNS server answered %s for %s", ErrUnavailable, dns.RcodeToString[r.Rcode], name)
	}
	if r.Truncated {
		return nil, fmt.Errorf("%w: the DNS answer for %s is truncated", ErrUnavailable, name)
	}
	// Only records of the name asked count, or of the names its CNAME
	// chain in the answer leads to: a record of any other name in the
	// answer proves nothing for this one.
	owners := map[string]bool{strings.ToLower(m.Question[0].Name): true}
	for grew := true; grew; {
		grew = false
		for _, rr := range r.Answer {
			if cn, ok := rr.(*dns.CNAME); ok && owners[strings.ToLower(cn.Hdr.Name)] && !owners[strings.ToLower(cn.Target)] {
				owners[strings.ToLower(cn.Target)], grew = true, true
			}
		}
	}
	var out []string
	for _, rr := range r.Answer {
		if t, ok := rr.(*dns.TXT); ok && rr.Header().Class == dns.ClassINET && owners[strings.ToLower(t.Hdr.Name)] {
			out = append(out, strings.Join(t.Txt, ""))
		}
	}
	return out, nil
}
