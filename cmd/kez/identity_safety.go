package main

// What keeps "kez init --force" and "kez recover --force" from throwing a
// registered handle away by accident, and what lets "kez recover" find the
// handle a restored key holds.

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// discardHandleHelp is the help text of the --discard-handle flag.
const discardHandleHelp = "with --force: give up the handle the identity being replaced holds; the value must be that handle (name@domain)"

func declareDiscardHandle(fs *flag.FlagSet, v *string) {
	fs.StringVar(v, "discard-handle", "", discardHandleHelp)
}

// currentKey returns the key of the identity in home if it can be read
// without asking: a plain file, or an encrypted one whose passphrase is in
// KEZ_PASSPHRASE_FILE or KEZ_PASSPHRASE. It returns nil otherwise (no
// identity, a damaged file, no or a wrong passphrase).
func currentKey(e *env, home string) *kez.PublicKey {
	pass, err := passphraseFromEnv(e, "")
	if err != nil {
		return nil
	}
	id, err := kez.LoadIdentity(home, pass)
	if err != nil {
		return nil
	}
	k := id.PublicKey()
	return &k
}

// handleAtRisk returns the handle that replacing the identity in home with
// the key next (nil: a new key) would lose, or "" if none would be.
//
// The profile names the handle and the key that holds it; it counts unless
// the identity's key can be read and is another (the profile is then left
// over from an identity replaced before). If the profile names none, the
// identity's own sigchain is asked, when a sig-server is known (flag,
// environment, profile, or the chat-server's /v1/info): a handle
// registered from another machine counts too. An unanswered question is an
// error, so that nothing is replaced on a guess.
func handleAtRisk(ctx context.Context, e *env, home string, prof *profile, sf serverFlags, next *kez.PublicKey) (string, error) {
	cur := currentKey(e, home)
	if prof.Handle != "" && (cur == nil || cur.String() == prof.Key) {
		if next != nil && next.String() == prof.Key {
			return "", nil // the same key comes back: its handle stays
		}
		return prof.Handle, nil
	}
	if cur == nil || (next != nil && *next == *cur) {
		return "", nil
	}
	srv, err := e.settleServers(ctx, sf, prof, false)
	if err != nil {
		return "", worded(err, "%s; so kez cannot tell whether the identity in %s holds a handle, and nothing was changed: run the same command again when the servers answer", e.sentence(err), home)
	}
	if srv.sigServer == "" {
		return "", nil // no server known: no handle to ask about
	}
	st, err := (&sigchain.Client{BaseURL: srv.sigServer, HTTPClient: httpClient}).FetchVerified(ctx, *cur, nil)
	switch {
	case errors.Is(err, sigchain.ErrNotFound):
		return "", nil
	case err != nil:
		return "", worded(err, "%s; so kez cannot tell whether the identity in %s holds a handle, and nothing was changed: run the same command again when the sig-server at %s answers", e.sentence(err), home, srv.sigServer)
	}
	return st.Handle(), nil
}

// confirmDiscard lets the replacement of an identity holding held go on
// only when the user names held: in --discard-handle, or typed on a
// terminal. what names the command ("kez init --force"). in reads the
// typed answer.
func confirmDiscard(e *env, in *bufio.Reader, home, held, flagValue, what string) error {
	if held == "" {
		return nil
	}
	if flagValue != "" {
		if sameHandle(flagValue, held) {
			return nil
		}
		return fmt.Errorf("--discard-handle=%s does not name the handle the identity in %s holds, @%s; nothing was changed", flagValue, home, held)
	}
	loss := fmt.Sprintf("the identity in %s holds the handle @%s, and %s would make another key: the handle stays with the old key, which only its 24 words bring back", home, held, what)
	instead := "To encrypt the identity or change its passphrase, run \"kez passphrase set\""
	if !e.isTerminal {
		return fmt.Errorf("%s. Nothing was changed. %s; only if you mean to give @%s up, add --discard-handle=%s", loss, instead, held, held)
	}
	line, err := askLine(e.stderr, in, "WARNING: %s.\n%s.\nTo give @%s up anyway, type %s and press Enter; anything else stops: ", upperFirst(loss), instead, held, held)
	if err != nil && line == "" {
		fmt.Fprintln(e.stderr)
		return fmt.Errorf("stopped: @%s was not confirmed; nothing was changed", held)
	}
	if !sameHandle(strings.TrimSpace(line), held) {
		return fmt.Errorf("stopped: that is not %s; nothing was changed", held)
	}
	return nil
}

// sameHandle reports whether the text names handle h ("name@domain"),
// with or without a leading "@", in any case.
func sameHandle(text, h string) bool {
	return strings.EqualFold(strings.TrimPrefix(strings.TrimSpace(text), "@"), h)
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// forgetHandle drops the handle and key from the profile in home after the
// identity that held them was replaced; the servers stay.
func forgetHandle(home string, prof *profile) error {
	if prof.Key == "" && prof.Handle == "" {
		return nil
	}
	prof.Key, prof.Handle = "", ""
	return saveProfile(home, prof)
}

// handleLookup is what findHandle learnt about the handle of a key.
type handleLookup struct {
	handle handles.Handle // the handle the chain names and the registry confirms; zero if none
	srv    servers
	note   string // a sentence for the user when no handle was confirmed; "" if there is nothing to say
}

// findHandle looks for the handle key holds: the handle its sigchain at
// the sig-server names, confirmed by the handle's registry (the resolver
// checks that the handle leads back to key and its chain). It never fails:
// what could not be found out is said in the note.
func findHandle(ctx context.Context, e *env, prof *profile, sf serverFlags, key kez.PublicKey) handleLookup {
	srv, err := e.settleServers(ctx, sf, prof, false)
	hl := handleLookup{srv: srv}
	if err != nil {
		hl.note = fmt.Sprintf("%s; so kez could not look for your handle. If you had one, \"kez register NAME\" restores it here once the chat-server answers.", upperFirst(e.sentence(err)))
		return hl
	}
	if srv.sigServer == "" {
		hl.note = "No server is known here (KEZ_SERVER or --server), so kez did not look for your handle. If you had one, \"kez register NAME --server URL\" restores it here."
		return hl
	}
	st, err := (&sigchain.Client{BaseURL: srv.sigServer, HTTPClient: httpClient}).FetchVerified(ctx, key, nil)
	switch {
	case errors.Is(err, sigchain.ErrNotFound):
		hl.note = fmt.Sprintf("The sig-server at %s has no sigchain for this key: it holds no handle there yet.", srv.sigServer)
		return hl
	case err != nil:
		hl.note = fmt.Sprintf("%s; so kez could not read your sigchain at %s to find your handle. If you had one, \"kez register NAME\" restores it here once the sig-server answers.", upperFirst(e.sentence(err)), srv.sigServer)
		return hl
	case st.Handle() == "":
		hl.note = fmt.Sprintf("Your sigchain at %s names no handle.", srv.sigServer)
		return hl
	}
	claimed := st.Handle()
	res, err := e.resolver(srv).Resolve(ctx, claimed)
	switch {
	case err == nil && res.Key == key:
		hl.handle = res.Handle
	case err == nil:
		hl.note = fmt.Sprintf("Your sigchain names @%s, but its registry gives that handle to another key.", claimed)
	case errors.Is(err, handles.ErrNotFound):
		hl.note = fmt.Sprintf("Your sigchain names @%s, but its registry has no such handle.", claimed)
	default:
		name, _, _ := strings.Cut(claimed, "@")
		hl.note = fmt.Sprintf("Your sigchain names @%s, but its registry could not confirm it (%s). When it answers, \"kez register %s\" restores it here.", claimed, e.sentence(aboutHandle(claimed, err)), name)
	}
	return hl
}
