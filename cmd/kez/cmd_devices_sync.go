package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// devicesNamed returns the devices of st named name, or whose key starts
// with name (at least 8 characters), current or revoked as asked.
func devicesNamed(st *sigchain.State, name string, revoked bool) []sigchain.Device {
	var match []sigchain.Device
	for _, d := range st.Devices() {
		if d.Revoked == revoked && (d.Name == name || strings.HasPrefix(d.Key.String(), name) && len(name) >= 8) {
			match = append(match, d)
		}
	}
	return match
}

// sameNameError says that several devices answer to name: the one to
// what (e.g. "revoke") must be given by its key; outcome ends the sentence.
func sameNameError(match []sigchain.Device, name, what, outcome string) error {
	keys := make([]string, len(match))
	for i, d := range match {
		keys[i] = d.Key.String()
	}
	return fmt.Errorf("%d devices are named %q: give the key of the one to %s (%s); %s", len(match), name, what, strings.Join(keys, ", "), outcome)
}

// runDevicesSync sends this device's contacts and history to another
// current device of the same person, named name: for an install that did
// not get them through "kez devices add" (a recovered one, or one added
// with --no-history or whose transfer stopped). The device is looked up on
// the person's own chain, freshly verified, so a revoked device or another
// person's is refused before anything is sent.
func runDevicesSync(ctx context.Context, e *env, o devicesOptions, name string) error {
	acct, _, st, err := e.ownChain(ctx, o.cf)
	if err != nil {
		return err
	}
	match := devicesNamed(st, name, false)
	switch len(match) {
	case 1:
	case 0:
		if len(devicesNamed(st, name, true)) > 0 {
			return fmt.Errorf("%q was revoked: a revoked device gets nothing from you any more; nothing was sent", name)
		}
		if k, err := kez.ParsePublicKey(name); err == nil {
			return fmt.Errorf("%s is not a device of yours: your sigchain does not list it, and your history goes only to your own devices; nothing was sent", k)
		}
		return fmt.Errorf("no current device of yours is named %q (\"kez devices\" lists them); nothing was sent", name)
	default:
		return sameNameError(match, name, "send to", "nothing was sent")
	}
	d := match[0]
	if d.Key == acct.device().PublicKey() {
		return fmt.Errorf("%q is this device: run \"kez devices sync %s\" on a device that has your history; nothing was sent", d.Name, d.Name)
	}
	return sendHistory(ctx, e, o, d.Key, d.Name, false)
}

// counted words n of a thing with a regular plural: "1 contact",
// "2 contacts", "0 contacts".
func counted(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
