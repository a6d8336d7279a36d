// Package client is the configuration every KEZ client part shares: the
// user's identity and state folder, the home chat-server and what it says
// about itself, the broker, and the HTTP client, handle resolver, clock and
// logger the parts use. chat.Open and files.Open both take a [Config]
// (as their Config's Client field), so a program describes the user once:
//
//	cc := client.Config{Identity: id, Home: dir, ServerURL: serverURL, NATSURL: natsURL}
//	c, err := chat.Open(ctx, chat.Config{Client: cc})
//	…
//	s, err := files.Open(ctx, files.Config{Client: cc, NATS: c.Conn()})
//
// The handle domain and the sig-server need not be configured: [Config.Discover]
// asks the chat-server (GET /v1/info, [handles.Client.Info]), and Open
// calls it. Discover once and pass the result to both parts to share one
// resolver (and its cache) and ask the server once.
//
// Why a package of its own: chat and files both import it, and it imports
// only what sits below them (kez, handles, sigchain, translog, nats.go), so neither
// depends on the other and no client part imports a server's package
// (chatserver keeps only the server side of /v1/info).
package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/translog"
	"github.com/kez-lat/kez-chat/translog/sqlitepins"
	"github.com/nats-io/nats.go"
)

// DefaultHTTPTimeout bounds one HTTP request of the client Discover makes
// when Config.HTTPClient is nil.
const DefaultHTTPTimeout = 20 * time.Second

// Errors of [Config.Discover] for a configuration it cannot complete.
var (
	// ErrNoIdentity: Config.Identity is nil, and Device and Person do
	// not name a linked device either.
	ErrNoIdentity = errors.New("client: no identity given")
	// ErrDevicePerson: Config.Person is not the key of Config.Identity,
	// or Config.Device is set without a Person while Identity is nil.
	ErrDevicePerson = errors.New("client: the device's person does not match the identity")
	// ErrNoHome: Config.Home is empty.
	ErrNoHome = errors.New("client: no state folder (Home) given")
)

// Config describes one user's client: who they are, where their state
// lives, and which servers they use. Identity (or Device and Person) and
// Home are required; ServerURL is what finds the rest. Every other field
// has a default that [Config.Discover] fills in.
//
// A person may use several devices (docs/spec/chat.md, "Devices"): the
// person is their primary key (Identity, from the 24 words), which signs
// their sigchain and is what contacts pin; each device logs in to the
// broker with a key of its own, which the person's chain lists. The
// install that holds the primary key and has no device key of its own
// uses the primary key as its device (Device nil): every install made
// before devices existed is such a primary device. A linked device holds
// only its device key: Identity nil, Device and Person set.
type Config struct {
	// Identity is the user's primary identity (kez.LoadIdentity). Required
	// unless Device and Person are set (a linked device, which does not
	// hold the primary key).
	Identity *kez.Identity
	// Device is the key this install logs in with, seals and opens
	// sessions with and publishes a prekey for. nil: Identity itself (the
	// primary device).
	Device *kez.Identity
	// Person is the primary key of the person this install belongs to.
	// Zero: Identity's key. When Identity is set too it must be its key.
	Person kez.PublicKey
	// Home is the user's state folder: chat.db, shares.db and the like
	// live in it. Required; created (mode 0700) if missing.
	Home string

	// ServerURL is the base URL of the user's home chat-server: handles
	// of its domain are looked up there, and it names the domain and the
	// sig-server (Discover). Empty: a client without a home server, which
	// can only work with full handles of other domains (and Domain and
	// SigServerURL, if set).
	ServerURL string
	// NATSURL is the broker. Empty: the client is offline (chat's Send
	// and Run return chat.ErrOffline; files' Fetch and Serve need a
	// connection from elsewhere).
	NATSURL string
	// NATSOptions are passed to the NATS login after the client's own
	// (e.g. nats.ReconnectWait, or a custom dialer).
	NATSOptions []nats.Option

	// Domain is the home handle domain: it completes bare names ("bob").
	// Empty: the one the chat-server at ServerURL registers.
	Domain string
	// SigServerURL is the sig-server holding the user's own sigchain.
	// Empty: the one the chat-server at ServerURL names.
	SigServerURL string
	// Relays are the libp2p relays (circuit relay v2, e.g. kez-relay)
	// file sharing uses to reach peers and be reached behind NAT: each a
	// multiaddr ending in /p2p/<the relay's peer id>
	// ([handles.ParseRelay]). Empty: those the chat-server at ServerURL
	// offers in /v1/info (Discover). A single [NoRelays] ("none"): no
	// relays. After Discover it is the list to use: checked, in canonical
	// form, "none" gone.
	Relays []string
	// AllowLocalDomains accepts development domains (localhost, IP:port)
	// in handles. Never in production. Discover turns it on when the home
	// Domain is one (the user chose that server).
	AllowLocalDomains bool
	// LocalDomains are handle domains whose servers may be plain http on
	// this machine or a private network (a dev stack, tests, a private
	// deployment); every other domain's servers, which a stranger may
	// choose, must be https at public addresses. The home Domain needs no
	// marking: ServerURL and the sig-server it names are the user's own.
	// See handles.Resolver.LocalDomains.
	LocalDomains []string
	// Resolver turns handles into verified keys. nil: Discover makes one
	// from ServerURL, Domain, AllowLocalDomains, LocalDomains, HTTPClient,
	// Clock and Log, which remembers answers for handles.DefaultResolveTTL.
	// Without ServerURL and Domain it resolves full handles of other
	// domains only.
	Resolver *handles.Resolver
	// Log checks that every sigchain the parts fetch is in its
	// sig-server's transparency log and that the logs' checkpoints agree
	// (docs/spec/translog.md): chat and files give it to every
	// sigchain.Client they make. nil: Discover makes one whose pins live
	// in Home/log.db (translog/sqlitepins), which [Config.Close] closes;
	// it asks the user's own servers, and those that are not public
	// https (those of local domains), with HTTPClient, and every other
	// sig-server with the resolver's client for remote origins.
	Log *translog.Monitor

	// HTTPClient is used for the home chat-server, the sig-servers and
	// the local domains' servers. nil: one with a [DefaultHTTPTimeout]
	// timeout.
	HTTPClient *http.Client
	// Logger logs what the user does not see otherwise (rejected
	// messages, flagged contacts, changed shared files). nil:
	// slog.Default().
	Logger *slog.Logger
	// Clock is the time source (send times, pins, link times, freshness).
	// nil: time.Now.
	Clock func() time.Time

	// logPins is the pins file Discover opened for Log, if it did.
	logPins io.Closer
	// relaysSettled: Discover has settled Relays (an empty list stays
	// empty on the next Discover).
	relaysSettled bool
}

// NoRelays, alone in [Config.Relays], means the client uses no relays,
// whatever its chat-server offers.
const NoRelays = "none"

// Discover returns c completed: the required fields checked, ServerURL
// without a trailing slash, Domain and SigServerURL asked of the
// chat-server at ServerURL when either is empty (an explicit value wins
// over the server's), Relays taken from the same answer when empty (asked
// for them alone, a server that cannot answer leaves the client without
// relays and is no error) and checked when given, AllowLocalDomains on if the home domain is a
// development domain, and HTTPClient, Logger, Clock and Resolver filled
// in, and Log made over Home/log.db (Home is created, mode 0700, if
// missing). A complete Config is returned unchanged and nothing is asked.
//
// Person is filled in with Identity's key when zero.
//
// Errors: [ErrNoIdentity], [ErrDevicePerson], [ErrNoHome], a state
// folder or log pins file that cannot be made or opened, or those of [handles.Client.Info]
// (handles.ErrUnreachable, handles.ErrNotFound for a server without
// /v1/info when Domain is not given either, handles.ErrBadInfo,
// handles.ErrRateLimited), wrapped; a relay address
// [handles.ParseRelay] refuses (handles.ErrBadRelay).
func (c Config) Discover(ctx context.Context) (Config, error) {
	switch {
	case c.Identity == nil && (c.Device == nil || c.Person.IsZero()):
		return c, ErrNoIdentity
	case c.Identity != nil && !c.Person.IsZero() && c.Person != c.Identity.PublicKey():
		return c, ErrDevicePerson
	case c.Home == "":
		return c, ErrNoHome
	}
	c.Person = c.PersonKey()
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: DefaultHTTPTimeout}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	c.ServerURL = strings.TrimRight(c.ServerURL, "/")
	c.SigServerURL = strings.TrimRight(c.SigServerURL, "/")
	needInfo := c.Domain == "" || c.SigServerURL == ""
	askRelays := len(c.Relays) == 0 && !c.relaysSettled
	if c.ServerURL != "" && (needInfo || askRelays) {
		info, err := (&handles.Client{BaseURL: c.ServerURL, HTTPClient: c.HTTPClient}).Info(ctx)
		switch {
		case err == nil:
			if c.Domain == "" {
				c.Domain = info.Domain
			}
			if c.SigServerURL == "" {
				c.SigServerURL = info.SigServer
			}
			if askRelays {
				c.Relays = info.Relays
			}
		case errors.Is(err, handles.ErrNotFound) && c.Domain != "":
			// A server without /v1/info: the configured domain stands.
		case !needInfo:
			// Only the relays were asked for: the client works without.
			c.Logger.Info("the chat-server did not say which relays it offers; file sharing goes without", "err", err)
		default:
			return c, fmt.Errorf("client: asking the chat-server which domain it serves: %w", err)
		}
	}
	if err := c.settleRelays(); err != nil {
		return c, err
	}
	if c.Domain != "" && IsDevelopmentDomain(c.Domain) {
		c.AllowLocalDomains = true
	}
	var ownResolver *handles.Resolver
	if c.Resolver == nil {
		ownResolver = &handles.Resolver{
			DefaultDomain: c.Domain, HomeServer: c.ServerURL, HTTPClient: c.HTTPClient,
			AllowLocal: c.AllowLocalDomains, LocalDomains: c.LocalDomains,
			Now: c.Clock, VerifyOptions: []sigchain.VerifyOption{sigchain.WithClock(c.Clock)},
		}
		c.Resolver = ownResolver
	}
	if c.Log == nil {
		if err := os.MkdirAll(c.Home, 0o700); err != nil {
			return c, fmt.Errorf("client: making the state folder: %w", err)
		}
		pins, err := sqlitepins.Open(filepath.Join(c.Home, sqlitepins.FileName))
		if err != nil {
			return c, fmt.Errorf("client: opening the log pins: %w", err)
		}
		c.logPins = pins
		c.Log = &translog.Monitor{Pins: pins, HTTPClient: c.logHTTPClient(), Clock: c.Clock, Logger: c.Logger}
	}
	if ownResolver != nil {
		ownResolver.Log = c.Log
	}
	return c, nil
}

// settleRelays checks Relays and puts them in canonical form; a lone
// [NoRelays] becomes none.
func (c *Config) settleRelays() error {
	if c.relaysSettled {
		return nil
	}
	if len(c.Relays) == 1 && c.Relays[0] == NoRelays {
		c.Relays = nil
	}
	out := make([]string, 0, len(c.Relays))
	for _, r := range c.Relays {
		a, err := handles.ParseRelay(r)
		if err != nil {
			return fmt.Errorf("client: Relays: %w", err)
		}
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		out = nil
	}
	c.Relays, c.relaysSettled = out, true
	return nil
}

// Close closes what [Config.Discover] opened for c: the pins file of the
// Log it made (a Log the caller set is left alone). chat.Client's and
// files.Sharing's Close call it when their Open discovered the Config;
// a program that calls Discover itself and gives the result to several
// parts calls it once they are all closed. It is safe to call more than
// once.
func (c *Config) Close() error {
	if c.logPins == nil {
		return nil
	}
	return c.logPins.Close()
}

// logHTTPClient is the Log's HTTP client: the configured one for the
// user's own servers and for those that are not public https (a
// sig-server is only ever asked for a chain, and so reaches the Log, once
// the resolver's rules allowed it: such a server is a local domain's),
// the resolver's client for remote origins for every other. It follows
// no redirects.
func (c *Config) logHTTPClient() *http.Client {
	own := map[string]bool{}
	for _, s := range []string{c.ServerURL, c.SigServerURL} {
		if u, err := url.Parse(s); err == nil && u.Host != "" {
			own[strings.ToLower(u.Host)] = true
		}
	}
	local := c.HTTPClient.Transport
	if local == nil {
		local = http.DefaultTransport
	}
	timeout := c.HTTPClient.Timeout
	if timeout <= 0 {
		timeout = DefaultHTTPTimeout
	}
	return &http.Client{
		Transport:     logTransport{own: own, local: local, remote: c.Resolver.RemoteClient},
		Timeout:       timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// logTransport sends the Log's requests: see logHTTPClient.
type logTransport struct {
	own    map[string]bool // hosts of the user's own servers
	local  http.RoundTripper
	remote func() *http.Client
}

// RoundTrip sends req with the local transport or the remote client's.
func (t logTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.own[strings.ToLower(req.URL.Host)] || handles.CheckRemoteURL(req.URL) != nil {
		return t.local.RoundTrip(req)
	}
	rt := t.remote().Transport
	if rt == nil { // as http.Client does with a nil Transport
		rt = http.DefaultTransport
	}
	return rt.RoundTrip(req)
}

// DeviceKey returns the key this install logs in with: Device's, else
// Identity's (the primary device). Zero if neither is set.
func (c *Config) DeviceKey() kez.PublicKey {
	switch {
	case c.Device != nil:
		return c.Device.PublicKey()
	case c.Identity != nil:
		return c.Identity.PublicKey()
	}
	return kez.PublicKey{}
}

// DeviceIdentity returns the identity this install logs in with: Device,
// else Identity (the primary device).
func (c *Config) DeviceIdentity() *kez.Identity {
	if c.Device != nil {
		return c.Device
	}
	return c.Identity
}

// PersonKey returns the person's primary key: Person, else Identity's.
// Zero if neither is set.
func (c *Config) PersonKey() kez.PublicKey {
	switch {
	case !c.Person.IsZero():
		return c.Person
	case c.Identity != nil:
		return c.Identity.PublicKey()
	}
	return kez.PublicKey{}
}

// IsPrimaryDevice reports whether this install's device is the primary
// key itself (Device nil, or the primary identity).
func (c *Config) IsPrimaryDevice() bool {
	return c.DeviceKey() == c.PersonKey()
}

// IsDevelopmentDomain reports whether d is a development domain (an IP
// address, a port, localhost), which handles of a production domain
// never are (handles.ReasonLocalDomain).
func IsDevelopmentDomain(d string) bool {
	_, err := handles.ParseDomain(d, false)
	return handles.ReasonOf(err) == handles.ReasonLocalDomain
}
