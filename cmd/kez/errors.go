package main

// How the CLI words errors. The libraries' errors are short and typed; the
// commands return them as they come (adding, where it helps, the handle
// they were about), and run prints env.sentence of what a command
// returned: one sentence that says what happened and what to do, found
// with errors.Is and errors.As, never by cutting error text.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"strings"
	"syscall"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/claims"
	"github.com/kez-lat/kez-chat/cmd/kez/internal/filewords"
	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/group"
	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/natsconn"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/translog"
)

// cliErr is an error the CLI worded itself: its message is printed as it
// is. It unwraps to the error it explains, so errors.Is still sees that.
type cliErr struct {
	msg string
	err error
}

func (e *cliErr) Error() string { return e.msg }
func (e *cliErr) Unwrap() error { return e.err }

// worded returns err with a message of the CLI's own.
func worded(err error, format string, a ...any) error {
	return &cliErr{msg: fmt.Sprintf(format, a...), err: err}
}

// handleErr marks an error of a command about one handle, so that the
// sentence can name who ("no one is registered as zed@kez.test").
type handleErr struct {
	handle string
	err    error
}

func (e *handleErr) Error() string { return e.err.Error() }
func (e *handleErr) Unwrap() error { return e.err }

// aboutHandle marks err as being about handle (as the user typed it).
func aboutHandle(handle string, err error) error {
	if err == nil {
		return nil
	}
	return &handleErr{handle: handle, err: err}
}

// groupErr marks an error of a command about one group, so that the
// sentence can name it, and the handles it named, if any.
type groupErr struct {
	group   string
	handles []string
	err     error
}

func (e *groupErr) Error() string { return e.err.Error() }
func (e *groupErr) Unwrap() error { return e.err }

// aboutGroup marks err as being about the group name (as the user typed
// it).
func aboutGroup(name string, err error) error {
	if err == nil {
		return nil
	}
	return &groupErr{group: name, err: err}
}

// aboutGroupMember marks err as being about the group name and the
// handles the command named.
func aboutGroupMember(name string, hs []string, err error) error {
	if err == nil {
		return nil
	}
	return &groupErr{group: name, handles: hs, err: err}
}

// sentence words an error for the terminal. An error the CLI worded
// itself (a *cliErr, a usage or exit error, a plain error of a command)
// keeps its text; a library error in its chain becomes the sentence for
// it. What no case knows is printed as it is.
func (e *env) sentence(err error) string {
	if e == nil {
		e = &env{}
	}
	switch err.(type) {
	case *cliErr, *usageError:
		return err.Error()
	case *exitError:
		return e.sentence(errors.Unwrap(err))
	}
	who := ""
	if he := new(handleErr); errors.As(err, &he) {
		who = fullHandle(he.handle, e.srv.domain)
	}
	if ge := new(groupErr); errors.As(err, &ge) {
		if s := e.groupSentence(ge); s != "" {
			return s
		}
	}
	var (
		notContact *chat.NotContactError
		keyChanged *chat.KeyChangedError
		rewritten  *chat.ChainRewrittenError
		ownChain   *chat.OwnChainRewrittenError
		quota      *chat.QuotaError
		offline    *files.OfflineError
		unreach    *files.UnreachableError
		notShared  *files.NotSharedError
		changed    *files.ChangedError
		device     *files.DeviceError
		rotation   *files.RotationError
		pathErr    *fs.PathError
		badHandle  *handles.HandleError
		badWord    *kez.WordError
		wordCount  *kez.WordCountError
	)
	switch {
	case errors.As(err, &notContact):
		return fmt.Sprintf("%s is not a contact yet: run kez contacts add %s", notContact.Handle, notContact.Handle)
	case errors.As(err, &keyChanged):
		k := keyChanged
		return fmt.Sprintf("WARNING: the key of %s changed: it was %s (fingerprint %s) and is now %s (fingerprint %s). "+
			"Someone may be impersonating them, or they made a new identity. Their messages are held and nothing is sent to them "+
			"until you compare the new fingerprint with them in person or by voice and accept it with kez contacts add %s",
			k.Handle, k.Pinned, k.Pinned.Fingerprint(), k.Current, k.Current.Fingerprint(), k.Handle)
	case errors.As(err, &rewritten):
		r := rewritten
		return fmt.Sprintf("WARNING: the sigchain of %s (%s) no longer contains the link %d you pinned (%s): the sig-server shows a rewritten history. "+
			"Their messages are held and nothing is sent to them until you check with them and accept the chain with kez contacts add %s",
			r.Handle, r.Key, r.Pinned.Seqno, r.Pinned.Head, r.Handle)
	case errors.As(err, &ownChain):
		return ownChainSentence(ownChain)
	case errors.Is(err, chat.ErrBlockSelf):
		return "you cannot block yourself: that key is yours, or one of your devices'"
	case errors.Is(err, chat.ErrBlocked):
		return fmt.Sprintf("you blocked %s, so nothing was sent: kez unblock %s first if you want to write to them", cmp.Or(who, "this person"), cmp.Or(who, "HANDLE"))
	case errors.Is(err, chat.ErrUnknownRecipient):
		return "the chat-server refused the message: that key holds no handle there, so nothing was sent"
	case errors.As(err, &quota):
		return quotaSentence(quota.Limit)
	case errors.Is(err, chat.ErrFingerprintMismatch):
		// Never the expected digits: they could be pasted back in.
		return fmt.Sprintf("that is not the safety number (or fingerprint) of the key pinned here for %s: someone may be between you, so do not trust this contact until you know why; nothing was changed", cmp.Or(who, "this contact"))
	case errors.Is(err, chat.ErrNoStream):
		return "the NATS server has no inbox stream: its chat-server is not running or not connected to it; try again later, or ask its operator"
	case errors.Is(err, natsconn.ErrNotRegistered):
		return "the NATS server refused your key: register a handle first (kez register NAME); if you did, its chat-server may be down, so try again later or ask its operator"
	case errors.Is(err, natsconn.ErrUnreachable):
		where := ""
		if e.natsURL != "" {
			where = " at " + natsconn.RedactURL(e.natsURL)
		}
		return fmt.Sprintf("cannot reach NATS%s%s: check that it is running and that NATS_URL (or --nats) names it", where, cause(err))

	case errors.As(err, &offline):
		if offline.Waited > 0 {
			return filewords.Offline(offline) + ": ask them to run kez serve, then run the same command again"
		}
		return filewords.Offline(offline) + ": ask them to run kez serve, or add --wait to wait until they do"
	case errors.As(err, &unreach):
		return unreachableSentence(unreach)
	case errors.As(err, &notShared):
		if notShared.Owner == "" {
			return filewords.NotShared(notShared) + ": kez files lists yours"
		}
		return filewords.NotShared(notShared) + ": kez files " + notShared.Owner + " lists them"
	case errors.As(err, &changed):
		if changed.Gone {
			return filewords.Changed(changed) + ": share it again from where it is now, or kez unshare it"
		}
		return filewords.Changed(changed) + ": run kez share " + changed.Path + " again to share the new version"
	case errors.As(err, &device) && device.Revoked:
		return fmt.Sprintf("that file is served by %s's device %q, which they revoked, so nothing was fetched: ask them to share it again from a device they use", device.Owner, device.Name)
	case errors.As(err, &device):
		return fmt.Sprintf("the device named to serve that file (%s) is not one of %s's devices, so nothing was fetched from it: their list of shared files is wrong (a faulty client, or someone else's device); tell them", device.Device, device.Owner)
	case errors.As(err, &rotation):
		return fmt.Sprintf("nothing was shared: %s revoked one of their devices and their encryption key was not rotated after it, so that device could still open the file; try again once their kez has been online (it rotates the key then)", rotation.Handle)
	case errors.Is(err, files.ErrNotPrimary):
		return "sharing and unsharing need your primary key, which this linked device does not hold: run the command on the install made by \"kez init\" or \"kez recover\" (this one can still list and fetch files)"
	case errors.Is(err, files.ErrNoKey):
		return fmt.Sprintf("%s shares that file privately, and this linked device holds none of your encryption keys that open it yet: run kez inbox here to take the keys an install holding your primary key sent (it sends them whenever it is online)", orOwner(who))
	case errors.Is(err, files.ErrSharedWithGroup):
		return fmt.Sprintf("%s shares that file with a group, and its key comes with the offer in the group: if you are in it, kez files --group GROUP lists what was shared there and kez fetch --group GROUP NAME fetches it", orOwner(who))
	case errors.Is(err, files.ErrOfferMismatch):
		return fmt.Sprintf("%s's list of shared files does not have what the group's offer says (another owner, group, name or size), so nothing was fetched", orOwner(who))
	case errors.Is(err, files.ErrForbidden):
		return filewords.Forbidden(who)
	case errors.Is(err, files.ErrNotFound):
		list := "kez files HANDLE"
		if who != "" {
			list = "kez files " + who
		}
		return filewords.NotFound(who) + ": " + list + " lists what they share now"
	case errors.Is(err, files.ErrBusy):
		return filewords.Busy(who) + ": run the same command again in a moment"
	case errors.Is(err, files.ErrCorrupt):
		return filewords.Corrupt(who) + ": try again later, and tell them if it happens again"
	case errors.Is(err, files.ErrNoNATS):
		return "that needs NATS: set NATS_URL (or pass --nats) to your operator's NATS"
	case errors.Is(err, files.ErrNoSigServer):
		return "that needs the sig-server that holds your sigchain: set KEZ_SIG_SERVER (or pass --sig-server)"
	case errors.Is(err, sigchain.ErrNotFound) && who == "":
		return "you have no sigchain at your sig-server yet: register first (kez register NAME)"
	case errors.Is(err, syscall.EROFS):
		return fmt.Sprintf("%v: set KEZ_HOME (or pass --home) to a writable folder", err)
	case errors.Is(err, fs.ErrPermission) && !errors.As(err, &pathErr):
		return fmt.Sprintf("%v: fix its permissions, or set KEZ_HOME (or pass --home) to a folder you may write", err)
	case errors.Is(err, fs.ErrExist) && errors.As(err, &pathErr):
		return fmt.Sprintf("%s already exists: name another path with -o, or add --force to replace it", pathErr.Path)

	case errors.As(err, &badWord):
		w := badWord
		msg := fmt.Sprintf("word %d (%q) is not a backup word", w.Position, w.Word)
		if n := len(w.Suggestions); n > 0 {
			q := make([]string, n)
			for i, s := range w.Suggestions {
				q[i] = fmt.Sprintf("%q", s)
			}
			if n > 1 {
				q = append(q[:n-2], q[n-2]+" or "+q[n-1])
			}
			msg += "; did you mean " + strings.Join(q, ", ") + "?"
		}
		return msg
	case errors.As(err, &wordCount):
		return fmt.Sprintf("a paper backup has %d words, got %d", kez.MnemonicWords, wordCount.Got)
	case errors.Is(err, kez.ErrChecksum):
		return "the words are all backup words but their checksum does not match: check each one against your paper backup (two swapped, or one written for another)"

	case handles.ReasonOf(err) == handles.ReasonNoDomain:
		return "a bare name needs your home domain: write name@domain, or set KEZ_SERVER to your chat-server"
	case errors.As(err, &badHandle):
		return fmt.Sprintf("%+q is not a valid handle: %s", badHandle.Input, badHandle.Detail)
	case errors.Is(err, handles.ErrForbiddenOrigin):
		return forbiddenSentence(err, who)
	case errors.Is(err, handles.ErrNotFound) && who != "":
		return fmt.Sprintf("no one is registered as %s", who)
	case errors.Is(err, translog.ErrSplitView):
		return fmt.Sprintf("WARNING: the sig-server's transparency log contradicts what it showed before (a split view: it shows different histories to different people), so %s was not trusted: tell the server's operator, and compare fingerprints in person before you trust the keys it serves", cmp.Or(who, "the sigchain"))
	case errors.Is(err, translog.ErrLogKeyChanged):
		return fmt.Sprintf("WARNING: the sig-server now signs its transparency log with another key than the one pinned here, so %s was not trusted: ask its operator why", cmp.Or(who, "the sigchain"))
	case errors.Is(err, translog.ErrNotLogged), errors.Is(err, translog.ErrBadProof), errors.Is(err, translog.ErrBadCheckpoint), errors.Is(err, translog.ErrInconsistent):
		return fmt.Sprintf("the sig-server did not prove that %s is in its transparency log, so it was not trusted", cmp.Or(who, "the sigchain"))
	case errors.Is(err, handles.ErrMismatch) && who != "":
		return fmt.Sprintf("DO NOT TRUST %s: their server's answer does not match the sigchain it points to", who)
	case errors.Is(err, handles.ErrUnreachable), errors.Is(err, sigchain.ErrUnreachable):
		return e.unreachable(err)
	case errors.Is(err, sigchain.ErrChainFull):
		return "your sigchain is as large as your sig-server allows, so it takes no new link: ask its operator"
	case errors.Is(err, sigchain.ErrConflict):
		return "your sigchain changed at the same time (another device?): run the same command again"
	case errors.Is(err, claims.ErrNotFound):
		return "the statement of the claim is not where its proof should be (the TXT record, the file on the website): publish it, then run the command again"
	case errors.Is(err, claims.ErrWrongKey):
		return "the statement of the claim names another KEZ key, so it proves nothing for this one"
	case errors.Is(err, claims.ErrStale):
		return "the statement of the claim was made for another place in the sigchain (an older or a revoked claim's): publish the one kez prints now"
	case errors.Is(err, claims.ErrBadSignature):
		return "the proof of the claim is not signed by the key it names"
	case errors.Is(err, claims.ErrBadStatement):
		return "the proof of the claim is not a kez claim statement (a line that starts with kez-claim=v1)"
	case errors.Is(err, claims.ErrUnsupported):
		return "kez does not check claims of that service: it checks dns, https and nostr"
	case errors.Is(err, claims.ErrBadIdentity):
		return "that is not a name of the claim's service (a domain name, https://HOST, an npub1… key)"
	case errors.Is(err, claims.ErrForbidden):
		return "kez does not contact that host for a claim, because it is not at a public address: if it is yours, on this machine or network, add it to KEZ_LOCAL_DOMAINS"
	case errors.Is(err, claims.ErrUnavailable):
		return "the place of the claim's proof could not be read (its DNS or web server failed, redirected or did not answer): try again later"
	case errors.Is(err, context.Canceled):
		return "stopped before it finished"
	}
	return err.Error()
}

// orOwner is who, else "the owner".
func orOwner(who string) string {
	if who == "" {
		return "the owner"
	}
	return who
}

// unreachable words a server that could not be reached: which one, why,
// and where its address comes from.
func (e *env) unreachable(err error) string {
	var ue *url.Error
	if !errors.As(err, &ue) {
		return fmt.Sprintf("a server did not answer as it should (%v): try again later", err)
	}
	base := ue.URL
	if u, perr := url.Parse(ue.URL); perr == nil {
		base = u.Scheme + "://" + u.Host
	}
	under := func(s string) bool { return s != "" && (ue.URL == s || strings.HasPrefix(ue.URL, s+"/")) }
	switch {
	case under(e.srv.server):
		return fmt.Sprintf("cannot reach your chat-server at %s%s: check that it is running and that KEZ_SERVER (or --server) names it", e.srv.server, cause(err))
	case under(e.srv.sigServer):
		return fmt.Sprintf("cannot reach your sig-server at %s%s: check that it is running and that KEZ_SIG_SERVER (or --sig-server) names it", e.srv.sigServer, cause(err))
	}
	return fmt.Sprintf("cannot reach the server at %s%s: it may be down; try again later", base, cause(err))
}

// cause says in a few words, in parentheses after a space, why a
// connection failed; "" when the error does not tell.
func cause(err error) string {
	var dns *net.DNSError
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return " (connection refused)"
	case errors.As(err, &dns):
		return " (no such host)"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return " (no answer in time)"
	}
	return ""
}

// quotaSentence says which sending limit refused a message, and what to
// do about it.
func quotaSentence(limit string) string {
	switch limit {
	case "sender":
		return "you are sending faster than the chat-server allows; nothing was sent: wait a little and send again"
	case "recipient":
		return "the recipient is taking in more mail than the chat-server allows right now; nothing was sent: try again later"
	case "unread":
		return "the recipient has not read the many messages you already sent; nothing was sent until they read some"
	default:
		return "the chat-server's message store is full; nothing was sent: try again later, or tell its operator"
	}
}

// forbiddenSentence words a refusal of the remote-origin rules.
func forbiddenSentence(err error, who string) string {
	server := "the server"
	if who != "" {
		server = "the server " + who + "'s domain names"
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		server += " (" + ue.URL + ")"
	}
	return fmt.Sprintf("kez will not contact %s, because it is not public https; "+
		"if it is a development or private domain you trust, add it to KEZ_LOCAL_DOMAINS", server)
}

// ownChainSentence is the warning of a sig-server that served an older or
// a different history of the user's own sigchain than this install
// verified (chat.ErrOwnChainRewritten).
func ownChainSentence(e *chat.OwnChainRewrittenError) string {
	what := "an older"
	if errors.Is(e.Err, sigchain.ErrFork) {
		what = "a different"
	}
	return fmt.Sprintf("WARNING: your sig-server served %s history of your own sigchain than this install verified (up to link %d, %s): "+
		"it lost data, or someone is trying to bring back a device you revoked. This install keeps the history it verified: "+
		"it appends nothing to your sigchain and sends nothing to a device that history shows revoked until the sig-server serves it again; tell its operator",
		what, e.Pinned.Seqno, e.Pinned.Head)
}

// groupSentence words the errors about a group (chat's and package
// group's); "" for one that is not.
func (e *env) groupSentence(ge *groupErr) string {
	name := fullGroup(ge.group, e.srv.domain)
	whom := "them"
	if len(ge.handles) > 0 {
		whom = atHandles(e, ge.handles)
	}
	err := ge.err
	var badHandle *handles.HandleError
	switch {
	case errors.As(err, &badHandle) && badHandle.Input == ge.group:
		return fmt.Sprintf("%+q is not a valid group name: %s", badHandle.Input, badHandle.Detail)
	case errors.Is(err, handles.ErrNotFound) && len(ge.handles) > 0:
		return fmt.Sprintf("no one is registered as %s, so nothing was changed", orList(ge.handles, e.srv.domain))
	case errors.Is(err, group.ErrMalformed):
		return fmt.Sprintf("that is not a valid change of %s (a title is at most 64 bytes of printable text), so nothing was changed", name)
	case errors.Is(err, chat.ErrGroupBroken), errors.Is(err, group.ErrFork):
		return fmt.Sprintf("WARNING: the sig-server of %s showed two different histories of who is in it: someone may be trying to slip people in or keep people out. "+
			"This install sends nothing to the group and opens nothing received for it; kez group show %s names both heads: tell its owner", name, name)
	case errors.Is(err, group.ErrRollback):
		return fmt.Sprintf("WARNING: the sig-server of %s served an older history of who is in it than this install verified (it lost data, or someone is trying to bring back a removed member); nothing was sent or changed: try again later, and tell its operator if it lasts", name)
	case errors.Is(err, chat.ErrGroupInvitation):
		return fmt.Sprintf("you have not accepted the invitation to %s, so nothing was sent or changed: kez group accept %s joins it (kez group leave %s declines it)", name, name, name)
	case errors.Is(err, chat.ErrUnknownGroup):
		return fmt.Sprintf("you are in no group named %s: kez group list shows yours, and kez group create makes one", name)
	case errors.Is(err, files.ErrNotGroupMember):
		return fmt.Sprintf("you are not a member of %s, so nothing was shared", name)
	case errors.Is(err, chat.ErrNotGroupMember):
		return fmt.Sprintf("you are not a member of %s (any more), so nothing was sent or changed", name)
	case errors.Is(err, group.ErrNotMember), errors.Is(err, group.ErrAlreadyMember):
		what := "not a member"
		if errors.Is(err, group.ErrAlreadyMember) {
			what = "already a member (or already in that role)"
		}
		return fmt.Sprintf("%s: %s of %s, so nothing was changed", whom, what, name)
	case errors.Is(err, group.ErrNotAllowed):
		return fmt.Sprintf("your role in %s does not allow that (owner and admins add and remove members; only the owner adds admins, removes an admin or changes roles), so nothing was changed: kez group show %s lists the roles", name, name)
	case errors.Is(err, group.ErrTooManyMembers):
		return fmt.Sprintf("%s would have more than the %d members a group may have, so nothing was changed", name, group.MaxMembers)
	case errors.Is(err, group.ErrNameTaken):
		return fmt.Sprintf("the name %s is taken on its sig-server: choose another name", name)
	}
	return ""
}

// orList names handles as "a@d", "a@d or b@d".
func orList(hs []string, domain string) string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = fullHandle(h, domain)
	}
	return strings.Join(out, " or ")
}
