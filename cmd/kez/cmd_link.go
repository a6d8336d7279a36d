package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

func init() {
	register(&command{
		name:    "link",
		args:    "[--name NAME] [--no-qr] [--home DIR] [--passphrase-file F] [--server URL] [--sig-server URL] [--nats URL]",
		summary: "make this new install a device of your person",
		help: `
Makes this install, which holds no key yet, a new device of a person who
already uses KEZ elsewhere: it makes a device key (its own; your 24 words
stay on your other install), posts a link request signed by it to your
sig-server and shows its code, e.g. 7KQ2-M9XD-4HTA-PW3R-K, and on a
terminal a QR code of it too (KEZ-LINK:7KQ2-M9XD-4HTA-PW3R-K, for an app
with a camera; --no-qr leaves it out). On an install
that holds your primary key (made by "kez init" or "kez recover"), run
"kez devices add CODE". The code names this device's key: no one else can
answer it with their own device, and it works once, for 10 minutes.

link waits for the approval, then checks it itself: your sigchain must list
this device's key, added by your primary key. Only then does it save the
device key (asking for a passphrase as "kez init" does) and your profile,
log in once so that your other device can seal to this one, and take what
has arrived: your contacts and history follow from the device that
approved it ("kez inbox" shows them as they come).

--name names this device in "kez devices" (default: this machine's host
name). The servers are --server and --sig-server, else KEZ_SERVER and
KEZ_SIG_SERVER; NATS is --nats, else NATS_URL (without it, the first
login waits for your next online command).`,
		flags: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			var o linkOptions
			fs.StringVar(&o.name, "name", "", "this device's name (default: the host name)")
			fs.BoolVar(&o.noQR, "no-qr", false, "do not draw the code as a QR code")
			fs.StringVar(&o.home, "home", "", homeFlagHelp)
			fs.StringVar(&o.passFile, "passphrase-file", "", "encrypt the device key with the passphrase in this file (env KEZ_PASSPHRASE_FILE; or KEZ_PASSPHRASE)")
			o.sf.declare(fs)
			fs.StringVar(&o.nats, "nats", "", "NATS server URL (env NATS_URL)")
			return func(ctx context.Context, args []string) error {
				if len(args) > 0 {
					return usagef("link takes no arguments, got %d", len(args))
				}
				return runLink(ctx, e, o)
			}
		},
	})
}

type linkOptions struct {
	name, home, passFile, nats string
	noQR                       bool
	sf                         serverFlags
}

// linkPoll is how often link asks whether its request was approved.
var linkPoll = time.Second

// clock returns the command's clock (e.now, else the time now).
func (e *env) clock() time.Time {
	if e.now != nil {
		return e.now()
	}
	return time.Now()
}

// newDeviceKey makes a device key (words never shown) and its link
// request, named name (default: the host name).
func newDeviceKey(e *env, name string) (*kez.Identity, *sigchain.LinkRequest, error) {
	if name == "" {
		name = defaultDeviceName()
	}
	dev, _, err := kez.NewIdentity()
	if err != nil {
		return nil, nil, err
	}
	req, err := sigchain.NewLinkRequest(dev, name, e.clock())
	return dev, req, err
}

// defaultDeviceName is the host name, cut to a valid device name.
func defaultDeviceName() string {
	h, err := os.Hostname()
	if err != nil || sigchain.CheckDeviceName(h) != nil {
		return "device"
	}
	return h
}

func runLink(ctx context.Context, e *env, o linkOptions) error {
	home, err := e.home(o.home)
	if err != nil {
		return err
	}
	if err := refuseKeys(home, "link makes a new device of an install that holds no key; use an empty --home (or KEZ_HOME) for the new device"); err != nil {
		return err
	}
	name := o.name
	if name == "" {
		name = defaultDeviceName()
	}
	if err := sigchain.CheckDeviceName(name); err != nil {
		return usagef("--name %q is not a device name: 1 to 64 bytes of printable text", name)
	}
	prof, err := loadProfile(home)
	if err != nil {
		return err
	}
	srv, err := e.settleServers(ctx, o.sf, prof, true)
	if err != nil {
		return err
	}
	if srv.sigServer == "" {
		return errors.New("no server to link through: give your chat-server with --server URL (or KEZ_SERVER)")
	}
	sc := &sigchain.Client{BaseURL: srv.sigServer, HTTPClient: httpClient}
	dev, req, err := newDeviceKey(e, name)
	if err != nil {
		return err
	}
	if err := sc.PostLinkRequest(ctx, req); err != nil {
		return worded(err, "the sig-server at %s did not take the link request (%s); nothing was saved", srv.sigServer, e.sentence(err))
	}
	code := req.Code()
	fmt.Fprintf(e.stdout, "To make this install a device of yours, run on an install that holds your primary key:\n\n    kez devices add %s\n\n", code)
	if e.stdoutTerminal && !o.noQR {
		fmt.Fprintf(e.stdout, "The same code as a QR code (%s), for an app with a camera:\n\n", code.URI())
		if err := writeQR(e.stdout, code.URI(), "    "); err != nil {
			return err
		}
		fmt.Fprintln(e.stdout)
	}
	fmt.Fprintf(e.stdout, "The code names this device (%q, key fingerprint %s) and works once, until %s.\n", name, dev.PublicKey().Fingerprint(), req.Expires().Local().Format("15:04:05"))
	fmt.Fprintln(e.stdout, "Waiting for the approval (Ctrl-C to give up)…")

	person, err := awaitApproval(ctx, e, sc, req)
	if err != nil {
		return err
	}
	st, err := sc.FetchVerified(ctx, person, nil)
	if err != nil {
		return worded(err, "the sig-server says %s approved this device, but its chain could not be checked (%s); nothing was saved", person, e.sentence(err))
	}
	if d, ok := st.DeviceOf(dev.PublicKey()); !ok || d.Revoked {
		return fmt.Errorf("the sig-server says %s approved this device, but that person's chain does not list it as a current device; nothing was saved", person)
	}

	pass, err := newPassphrase(e, bufio.NewReader(e.stdin), o.passFile)
	if err != nil {
		return err
	}
	if err := kez.SaveDevice(home, dev, person, pass, kez.WithScryptWorkFactor(scryptWorkFactor)); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "\nDevice key saved in %s, %s.\n", kez.DevicePath(home), storageNote(pass != nil))
	prof.Key, prof.Handle, prof.Domain, prof.Server, prof.SigServer = person.String(), "", srv.domain, srv.server, srv.sigServer
	hl := findHandle(ctx, e, prof, o.sf, person)
	if !hl.handle.IsZero() {
		prof.Handle, prof.Domain = hl.handle.String(), hl.handle.Domain
	} else if hl.note != "" {
		fmt.Fprintln(e.stdout, hl.note)
	}
	if err := saveProfile(home, prof); err != nil {
		return err
	}
	who := person.String()
	if prof.Handle != "" {
		who = "@" + prof.Handle
	}
	firstLogin(ctx, e, home, o, srv)
	fmt.Fprintf(e.stdout, "This install is now a device of %s (fingerprint %s).\n", who, person.Fingerprint())
	return nil
}

// refuseKeys returns an error (why) if home holds an identity or a device
// key.
func refuseKeys(home, why string) error {
	for _, has := range []func(string) (bool, error){kez.HasIdentity, kez.HasDevice} {
		ok, err := has(home)
		if err != nil {
			return err
		}
		if ok {
			return fmt.Errorf("%s already holds a key (\"kez id\" shows it): %s", home, why)
		}
	}
	return nil
}

// awaitApproval asks the sig-server until an add_device link for req's
// device is stored, and returns its person; it gives up when the request
// expires.
func awaitApproval(ctx context.Context, e *env, sc *sigchain.Client, req *sigchain.LinkRequest) (kez.PublicKey, error) {
	t := time.NewTicker(linkPoll)
	defer t.Stop()
	for {
		_, person, err := sc.FetchLinkRequest(ctx, req.Code())
		switch {
		case err == nil && !person.IsZero():
			return person, nil
		case errors.Is(err, sigchain.ErrNoLinkRequest) || (err == nil && !e.clock().Before(req.Expires())):
			return kez.PublicKey{}, errors.New("the code expired before anyone approved it, so nothing was saved; run \"kez link\" again for a new one")
		case err != nil && !errors.Is(err, sigchain.ErrUnreachable) && !errors.Is(err, sigchain.ErrRateLimited):
			return kez.PublicKey{}, worded(err, "asking whether the code was approved failed (%s); nothing was saved", e.sentence(err))
		}
		select {
		case <-ctx.Done():
			return kez.PublicKey{}, fmt.Errorf("stopped before the approval, so nothing was saved: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// firstLogin logs the new device in once: it publishes its prekey, so
// that the device that approved it can send it the history, and takes
// what arrived. A failure is only said: the next online command does it.
func firstLogin(ctx context.Context, e *env, home string, o linkOptions, srv servers) {
	f := chatFlags{home: home, sf: o.sf, nats: o.nats}
	if e.envOr(o.nats, "NATS_URL") == "" {
		fmt.Fprintln(e.stdout, "No NATS server is set (NATS_URL or --nats), so this device has not logged in yet: your history is sent to it once it does (\"kez inbox\").")
		return
	}
	c, err := e.openChat(ctx, f, true)
	if err != nil {
		fmt.Fprintf(e.stdout, "This device could not log in yet (%s): your history is sent to it once it does (\"kez inbox\").\n", e.sentence(err))
		return
	}
	defer c.Close()
	if _, err := c.Sync(ctx); err != nil && !errors.Is(err, chat.ErrOffline) {
		fmt.Fprintf(e.stdout, "Logged in, but fetching what waits failed (%s).\n", e.sentence(err))
	}
	fmt.Fprintln(e.stdout, "Logged in: your other device can now send this one your contacts and history; \"kez inbox\" shows what arrived.")
}
