package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

func init() {
	register(&command{
		name:    "devices",
		args:    "[list [--json] | add CODE [--name NAME] [--no-history] | revoke NAME | sync NAME] [--home DIR] [--server URL] [--sig-server URL] [--nats URL] [--verbose]",
		summary: "list, add, revoke and sync the devices of your person",
		help: `
kez devices [list] [--json]
    Lists your devices as your sigchain names them: name, key fingerprint,
    when your chat-server last saw it fetch its messages ("now (this
    device)", "2 minutes ago", "not seen": never, or not since the servers
    restarted), when it was added and whether it was revoked; this device
    is marked. --json prints [{"name","key","fingerprint","primary","this",
    "added_at","revoked","revoked_at","last_seen"}] (last_seen: null when
    not seen).

kez devices add CODE [--name NAME] [--no-history]
    On an install that holds your primary key: approves the new device
    whose "kez link" shows CODE. The request is fetched from your
    sig-server and checked (its signature by the new device's key, the code
    that names it, its 10 minutes); then your primary key signs an
    add_device link naming that key, the chat-server registers the device
    and your sigchain gets the link. An expired, used, mistyped or forged
    code is refused and changes nothing. --name is the name you expect:
    a request for another name is refused. Then your contacts and
    history are sent to the new device, end-to-end encrypted through the
    broker (it may be offline: they wait in its inbox), after your
    encryption keys, so that it opens the private files shared with you
    (it says which generations); --no-history skips both (the keys
    follow at this install's next online command).

kez devices revoke NAME
    On an install that holds your primary key: revokes the device named
    NAME (or the one whose key, "U…" as "kez devices --json" shows it,
    starts with NAME: at least 8 characters) for good with a revoke_device
    link. The chat-server refuses it at once and closes its connections;
    your contacts stop sealing to it at their next check.
    Your encryption key is then rotated (a set_encryption_key link) and
    the new one sent to your remaining devices only, so files shared
    with you from then on do not open on the revoked device.
    The last current device cannot be revoked.

kez devices sync NAME
    On any of your devices that has your history: sends its contacts and
    history to your current device named NAME (or whose key starts with
    NAME: at least 8 characters), as "devices add" does, for an install
    that did not get them: one "kez recover" made, or one added with
    --no-history. On an install that holds your primary key, your
    encryption keys go first, as with "devices add". A revoked
    device, this one, or a key your sigchain does not list is refused
    and nothing is sent.`,
		flags: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			var o devicesOptions
			o.cf.declare(fs, true)
			fs.BoolVar(&o.asJSON, "json", false, "print JSON (list)")
			fs.StringVar(&o.name, "name", "", "add: the name the new device must have")
			fs.BoolVar(&o.noHistory, "no-history", false, "add: do not send your contacts and history to the new device")
			return func(ctx context.Context, args []string) error {
				sub, rest := "list", args
				if len(args) > 0 {
					sub, rest = args[0], args[1:]
				}
				if sub != "add" && (o.name != "" || o.noHistory) {
					return usagef("--name and --no-history are for devices add")
				}
				if sub != "list" && o.asJSON {
					return usagef("--json is for devices list only")
				}
				switch sub {
				case "list":
					if len(rest) != 0 {
						return usagef("devices list takes no arguments")
					}
					return runDevicesList(ctx, e, o)
				case "add":
					if len(rest) != 1 {
						return usagef("devices add takes the CODE \"kez link\" shows")
					}
					return runDevicesAdd(ctx, e, o, rest[0])
				case "revoke":
					if len(rest) != 1 {
						return usagef("devices revoke takes the NAME of one device")
					}
					return runDevicesRevoke(ctx, e, o, rest[0])
				case "sync":
					if len(rest) != 1 {
						return usagef("devices sync takes the NAME of the device to send your history to")
					}
					return runDevicesSync(ctx, e, o, rest[0])
				default:
					return usagef("no devices subcommand %q: use list, add, revoke or sync", sub)
				}
			}
		},
	})
}

type devicesOptions struct {
	cf        chatFlags
	asJSON    bool
	name      string
	noHistory bool
}

// deviceJSON is one device in "kez devices --json"; fields may be added.
type deviceJSON struct {
	Name        string     `json:"name"`
	Key         string     `json:"key"`
	Fingerprint string     `json:"fingerprint"`
	Primary     bool       `json:"primary"`
	This        bool       `json:"this"`
	AddedAt     time.Time  `json:"added_at"`
	Revoked     bool       `json:"revoked"`
	RevokedAt   *time.Time `json:"revoked_at"`
	LastSeen    *time.Time `json:"last_seen"` // null: not seen, or unknown
}

// ownChain loads the account and fetches and verifies its person's chain.
func (e *env) ownChain(ctx context.Context, cf chatFlags) (*account, servers, *sigchain.State, error) {
	acct, err := e.loadAccount(cf.home)
	if err != nil {
		return nil, servers{}, nil, err
	}
	srv, st, err := e.ownChainOf(ctx, cf, acct)
	return acct, srv, st, err
}

// ownChainOf fetches and verifies the chain of acct's person, checked
// against the one this install pinned in its chat state (it must extend
// it: a sig-server that serves an older or a different history is not
// believed, and nothing is done with what it served).
func (e *env) ownChainOf(ctx context.Context, cf chatFlags, acct *account) (servers, *sigchain.State, error) {
	srv, err := e.settleServers(ctx, cf.sf, acct.prof, false)
	if err != nil {
		return servers{}, nil, err
	}
	if srv.sigServer == "" {
		return servers{}, nil, errors.New("no sig-server is known here: give your chat-server with --server URL (or KEZ_SERVER)")
	}
	c, err := e.openChatAs(ctx, cf, acct, false, true)
	if err != nil {
		return servers{}, nil, worded(err, "your sigchain could not be checked against the one this install verified before: %s; nothing was changed", e.sentence(err))
	}
	defer c.Close()
	st, err := c.OwnChain(ctx)
	if errors.Is(err, chat.ErrOwnChainRewritten) {
		if e.ownChainWarned.Load() { // told when the chat state was opened
			return servers{}, nil, worded(err, "nothing was changed, because of the warning above")
		}
		return servers{}, nil, worded(err, "%s; nothing was changed", e.sentence(err))
	}
	if err != nil {
		return servers{}, nil, worded(err, "your sigchain at %s could not be read and checked: %s", srv.sigServer, e.sentence(err))
	}
	return srv, st, nil
}

// deviceStatus returns acct's devices with when the chat-server last saw
// each; when it cannot ask the chat-server (it is down, this install does
// not log in), the chain's devices and, in unknown, why the times are
// unknown.
func (e *env) deviceStatus(ctx context.Context, cf chatFlags, acct *account) (devs []chat.DeviceStatus, unknown string, err error) {
	c, err := e.openChatAs(ctx, cf, acct, true, true)
	if err == nil {
		defer c.Close()
		if devs, err = c.DeviceStatus(ctx); err == nil {
			return devs, "", nil
		}
	}
	unknown = e.sentence(err)
	_, st, err := e.ownChainOf(ctx, cf, acct)
	if err != nil {
		return nil, "", err
	}
	this := acct.device().PublicKey()
	for _, d := range st.Devices() {
		devs = append(devs, chat.DeviceStatus{Device: d, This: d.Key == this})
	}
	return devs, unknown, nil
}

func runDevicesList(ctx context.Context, e *env, o devicesOptions) error {
	acct, err := e.loadAccount(o.cf.home)
	if err != nil {
		return err
	}
	devs, unknown, err := e.deviceStatus(ctx, o.cf, acct)
	if err != nil {
		return err
	}
	if unknown != "" {
		fmt.Fprintf(e.stderr, "kez devices: when your devices were last seen is unknown: %s\n", unknown)
	}
	if o.asJSON {
		out := make([]deviceJSON, 0, len(devs))
		for _, d := range devs {
			j := deviceJSON{Name: d.Name, Key: d.Key.String(), Fingerprint: d.Key.Fingerprint(), Primary: d.Primary, This: d.This, AddedAt: d.Added.UTC(), Revoked: d.Revoked}
			if d.Revoked {
				at := d.RevokedAt.UTC()
				j.RevokedAt = &at
			}
			if !d.LastSeen.IsZero() {
				at := d.LastSeen.UTC()
				j.LastSeen = &at
			}
			out = append(out, j)
		}
		return json.NewEncoder(e.stdout).Encode(out)
	}
	now := e.clock()
	fmt.Fprintf(e.stdout, "Devices of %s:\n", acct.who())
	fmt.Fprintf(e.stdout, "  %-16s %-35s  %s\n", "NAME", "FINGERPRINT", "LAST SEEN")
	for _, d := range devs {
		mark := "  "
		if d.This {
			mark = "* "
		}
		state := "added " + d.Added.Local().Format("2006-01-02 15:04")
		if d.Primary {
			state = "your primary key, since " + d.Added.Local().Format("2006-01-02 15:04")
		}
		if d.Revoked {
			state += ", revoked " + d.RevokedAt.Local().Format("2006-01-02 15:04")
		}
		fmt.Fprintf(e.stdout, "%s%-16s %-35s  %-22s  %s\n", mark, d.Name, d.Key.Fingerprint(), lastSeenWords(d, unknown != "", now), state)
	}
	fmt.Fprintln(e.stdout, "(* this device; last seen: when it last fetched its messages, as your chat-server knows)")
	return nil
}

// lastSeenWords says when the chat-server last saw d: "now (this
// device)", "2 minutes ago", "not seen" (never, or not since the servers
// restarted), "-" for a revoked device, "unknown" when the chat-server
// could not be asked.
func lastSeenWords(d chat.DeviceStatus, unknown bool, now time.Time) string {
	switch {
	case d.Revoked:
		return "-"
	case d.This:
		return "now (this device)"
	case unknown:
		return "unknown"
	case d.LastSeen.IsZero():
		return "not seen"
	}
	return agoWords(now.Sub(d.LastSeen), d.LastSeen)
}

// agoWords words the time since t, ago long: "just now", "1 minute ago",
// "3 hours ago", "5 days ago", then the date.
func agoWords(ago time.Duration, t time.Time) string {
	plural := func(n int, unit string) string {
		if n == 1 {
			return "1 " + unit + " ago"
		}
		return fmt.Sprintf("%d %ss ago", n, unit)
	}
	switch {
	case ago < time.Minute:
		return "just now"
	case ago < time.Hour:
		return plural(int(ago/time.Minute), "minute")
	case ago < 48*time.Hour:
		return plural(int(ago/time.Hour), "hour")
	case ago < 60*24*time.Hour:
		return plural(int(ago/(24*time.Hour)), "day")
	}
	return "on " + t.Local().Format("2006-01-02")
}

// linkCodeError words a code that cannot be used; nothing was changed.
func linkCodeError(e *env, code string, err error) error {
	switch {
	case errors.Is(err, sigchain.ErrBadLinkCode):
		return worded(err, "%q is not a link code: check it against the one \"kez link\" shows (a mistyped character is caught by its check character); nothing was changed", code)
	case errors.Is(err, sigchain.ErrNoLinkRequest):
		return worded(err, "no device waits for the code %s: it expired (codes work for 10 minutes) or was never made here; run \"kez link\" again on the new device; nothing was changed", code)
	case errors.Is(err, sigchain.ErrLinkExpired):
		return worded(err, "the code %s has expired (codes work for 10 minutes): run \"kez link\" again on the new device; nothing was changed", code)
	case errors.Is(err, sigchain.ErrLinkNotYetValid):
		return worded(err, "the request of %s is dated in the future: check the clocks of both machines; nothing was changed", code)
	case errors.Is(err, sigchain.ErrBadLinkRequest):
		return worded(err, "the sig-server answered the code %s with a request that is not the one it names, so it was refused; nothing was changed", code)
	}
	return worded(err, "the code %s could not be checked (%s); nothing was changed", code, e.sentence(err))
}

func runDevicesAdd(ctx context.Context, e *env, o devicesOptions, codeText string) error {
	code, err := sigchain.ParseLinkCode(codeText)
	if err != nil {
		return linkCodeError(e, codeText, err)
	}
	acct, srv, st, err := e.ownChain(ctx, o.cf)
	if err != nil {
		return err
	}
	id, err := acct.primary("kez devices add")
	if err != nil {
		return err
	}
	sc := &sigchain.Client{BaseURL: srv.sigServer, HTTPClient: httpClient}
	req, person, err := sc.FetchLinkRequest(ctx, code)
	if err != nil {
		return linkCodeError(e, code.String(), err)
	}
	if err := req.CheckFresh(e.clock()); err != nil {
		return linkCodeError(e, code.String(), err)
	}
	devKey := req.Device()
	switch d, known := st.DeviceOf(devKey); {
	case known && !d.Revoked:
		return fmt.Errorf("the device of code %s (%q) is a device of yours already; nothing was changed", code, req.Name())
	case known:
		return fmt.Errorf("the device of code %s (%q) was revoked: a revoked key never comes back; run \"kez link\" again on it for a new key; nothing was changed", code, req.Name())
	case !person.IsZero():
		return fmt.Errorf("the code %s was used already: its device belongs to %s; nothing was changed", code, person)
	}
	if o.name != "" && o.name != req.Name() {
		return fmt.Errorf("the device of code %s calls itself %q, not %q: if that is not the device you are linking, someone else may have sent you this code; nothing was changed", code, req.Name(), o.name)
	}
	l, err := sigchain.NewLink(id, st, sigchain.TypeAddDevice, sigchain.AddDeviceBody(req), e.clock())
	if err != nil {
		return worded(err, "the device of code %s cannot be added: %s; nothing was changed", code, e.sentence(err))
	}
	// The chat-server first: when the new device sees the link on the
	// sigchain, it can log in at once.
	hc := &handles.Client{BaseURL: srv.server, HTTPClient: httpClient}
	if _, _, err := hc.RegisterDevice(ctx, l.Bytes()); err != nil {
		return worded(err, "the chat-server at %s refused the new device (%s); your sigchain is unchanged", srv.server, e.sentence(err))
	}
	if err := sc.Append(ctx, l); err != nil {
		return worded(err, "the chat-server took the new device, but your sig-server did not take the link (%s): run the same \"kez devices add\" again before the code expires", e.sentence(err))
	}
	fmt.Fprintf(e.stdout, "Added %q (key fingerprint %s) as a device of %s: your primary key signed it into your sigchain, and your chat-server lets it log in.\n", req.Name(), devKey.Fingerprint(), acct.who())
	if o.noHistory {
		fmt.Fprintf(e.stdout, "Your contacts and history were not sent to it (--no-history); it receives what is sent from now on, and \"kez devices sync %s\" sends them later.\n", req.Name())
		return nil
	}
	return sendHistory(ctx, e, o, devKey, req.Name(), true)
}

// historyWait bounds how long "devices add" waits for the new device to
// come online (or to make room in its inbox) before it gives up sending
// the history.
var historyWait = 10 * time.Minute

// sendHistory sends this device's contacts and history to devKey, named
// name; added: the device was just added (errors say so).
func sendHistory(ctx context.Context, e *env, o devicesOptions, devKey kez.PublicKey, name string, added bool) error {
	failed := fmt.Sprintf("your history could not be sent to %q", name)
	if added {
		failed = "the device was added, but " + failed
	}
	c, err := e.openChat(ctx, o.cf, true)
	if err != nil {
		return worded(err, "%s: %s", failed, e.sentence(err))
	}
	defer c.Close()
	fmt.Fprintf(e.stdout, "Sending your contacts and history to %q, end-to-end encrypted…\n", name)
	stats, err := c.SendHistory(ctx, devKey, chat.HistoryOptions{
		MaxWait: historyWait,
		OnWait: func(why error) {
			if errors.Is(why, chat.ErrNoPrekey) {
				fmt.Fprintf(e.stdout, "Waiting for %q to log in (\"kez link\" does, or any online command there)…\n", name)
			} else {
				fmt.Fprintf(e.stdout, "Waiting for room in the inbox of %q…\n", name)
			}
		},
	})
	if err != nil {
		return worded(err, "%s: sending stopped after %d messages (%s); \"kez devices sync %s\" starts again, and what arrived already is kept once", failed, stats.Messages, e.sentence(err), name)
	}
	if g := stats.KeyGenerations; len(g) > 0 {
		fmt.Fprintf(e.stdout, "Sent your encryption keys (%s), so that it opens the private files shared with you.\n", generations(g))
	}
	if stats.Chunks == 0 && stats.ContactsSkipped+stats.MessagesSkipped == 0 {
		fmt.Fprintf(e.stdout, "This device has no contacts or messages yet, so no history was sent to %q.\n", name)
		return nil
	}
	fmt.Fprintf(e.stdout, "Sent %s and %s in %s (%s) in %s.\n", counted(stats.Contacts, "contact"), counted(stats.Messages, "message"),
		counted(stats.Chunks, "chunk"), humanSize(int64(stats.Bytes)), stats.Elapsed.Round(time.Millisecond))
	if n := stats.ContactsSkipped + stats.MessagesSkipped; n > 0 {
		fmt.Fprintf(e.stdout, "%s and %s were too large to send; add those contacts again there.\n", counted(stats.ContactsSkipped, "contact"), counted(stats.MessagesSkipped, "message"))
	}
	return nil
}

// generations words the key generations sent, oldest first:
// "generation 0", "generations 0–2".
func generations(g []uint32) string {
	if len(g) == 1 {
		return fmt.Sprintf("generation %d", g[0])
	}
	return fmt.Sprintf("generations %d–%d", g[0], g[len(g)-1])
}

func runDevicesRevoke(ctx context.Context, e *env, o devicesOptions, name string) error {
	acct, srv, st, err := e.ownChain(ctx, o.cf)
	if err != nil {
		return err
	}
	if _, err := acct.primary("kez devices revoke"); err != nil {
		return err
	}
	match := devicesNamed(st, name, false)
	switch len(match) {
	case 0:
		return revokeAgain(ctx, e, srv, st, name)
	case 1:
	default:
		return sameNameError(match, name, "revoke", "nothing was changed")
	}
	d := match[0]
	if cur := st.CurrentDevices(); len(cur) == 1 {
		return fmt.Errorf("%q is your last current device, and revoking it would leave you none; nothing was changed", d.Name)
	}
	rv, err := revokeWithChat(ctx, e, o, d.Key)
	if rv.Link == nil {
		return worded(err, "%q cannot be revoked: %s; nothing was changed", d.Name, e.sentence(err))
	}
	hc := &handles.Client{BaseURL: srv.server, HTTPClient: httpClient}
	if _, _, rerr := hc.RegisterDevice(ctx, rv.Link.Bytes()); rerr != nil {
		return worded(rerr, "your sigchain revokes %q, but the chat-server did not take it yet (%s): run \"kez devices revoke %s\" again to tell it", d.Name, e.sentence(rerr), name)
	}
	fmt.Fprintf(e.stdout, "Revoked %q (key fingerprint %s) for good: your sigchain says so, your chat-server refuses it and closed its connections, and your contacts stop sealing to it at their next check.\n", d.Name, d.Key.Fingerprint())
	switch {
	case err != nil:
		fmt.Fprintf(e.stdout, "Your encryption key was not rotated yet (%s): the next online command of this install rotates it, so that files shared with you from then on stay closed to %q.\n", e.sentence(err), d.Name)
	case rv.KeysPending > 0:
		fmt.Fprintf(e.stdout, "Your encryption key is rotated to generation %d, which %q never gets; %d of your other devices got it, %d get it when this install is next online and they have logged in.\n", rv.Generation, d.Name, rv.KeysSent, rv.KeysPending)
	case rv.KeysSent > 0:
		fmt.Fprintf(e.stdout, "Your encryption key is rotated to generation %d, which %q never gets; your %d other devices got it.\n", rv.Generation, d.Name, rv.KeysSent)
	default:
		fmt.Fprintf(e.stdout, "Your encryption key is rotated to generation %d, which %q never gets.\n", rv.Generation, d.Name)
	}
	if d.Key == acct.device().PublicKey() {
		fmt.Fprintln(e.stdout, "That was this device: it can no longer send or receive.")
	}
	return nil
}

// revokeWithChat revokes key with the chat client (the revocation, the
// encryption key's rotation, the new key to the remaining devices); a
// broker that cannot be reached leaves the keys to be sent later.
func revokeWithChat(ctx context.Context, e *env, o devicesOptions, key kez.PublicKey) (chat.Revocation, error) {
	c, err := e.openChat(ctx, o.cf, true)
	if err != nil {
		c, err = e.openChat(ctx, o.cf, false)
	}
	if err != nil {
		return chat.Revocation{}, err
	}
	defer c.Close()
	return c.RevokeDevice(ctx, key)
}

// revokeAgain handles a NAME that names no current device: if it names a
// revoked one, the revocation is given to the chat-server again (it may
// have missed it); else it is an error.
func revokeAgain(ctx context.Context, e *env, srv servers, st *sigchain.State, name string) error {
	var revoked *sigchain.Device
	for _, d := range st.Devices() {
		if d.Revoked && d.Name == name {
			revoked = &d
		}
	}
	if revoked == nil {
		return fmt.Errorf("no current device of yours is named %q (\"kez devices\" lists them); nothing was changed", name)
	}
	links, err := (&sigchain.Client{BaseURL: srv.sigServer, HTTPClient: httpClient}).Fetch(ctx, st.Key(), revoked.RevokedSeqno-1)
	if err != nil || len(links) == 0 || links[0].Type() != sigchain.TypeRevokeDevice {
		return fmt.Errorf("%q was revoked already, and its revocation could not be read back to tell the chat-server again", name)
	}
	if _, _, err := (&handles.Client{BaseURL: srv.server, HTTPClient: httpClient}).RegisterDevice(ctx, links[0].Bytes()); err != nil {
		return worded(err, "%q was revoked already; telling the chat-server again failed (%s)", name, e.sentence(err))
	}
	fmt.Fprintf(e.stdout, "%q was revoked already; the chat-server has the revocation too.\n", name)
	return nil
}
