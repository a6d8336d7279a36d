package chatserver

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Devices at the gate (docs/security.md, "Devices"). A person's devices
// each log in with their own key and have their own inbox and consumer;
// the gate
//
//   - takes a send's sender buckets and unread cap from the sender's
//     person, so that a person's allowance does not grow with its devices,
//     and a recipient's buckets per recipient device and sending person;
//   - refuses mail to a revoked device, and sends, pulls, consumer
//     requests and acknowledgements from one whose connection is still
//     open (until the kicker closes it, or its user JWT expires);
//   - learns of a revocation at once in the process that stored it, and
//     within a round trip in every other (kez.v1.revoked, which makes
//     them look the key up again). A process that missed that notice
//     (it was disconnected) trusts its cached answer for at most
//     MailLimits.KnownTTL.

// errNotAKey: a key token that is not a key.
var errNotAKey = errors.New("not a key")

// lookup returns what the registry says of the key with text form text,
// from a short-lived cache (MailLimits.KnownTTL for a registered key, a
// tenth of it for an unknown one, an hour for a revoked device, which
// stays revoked); errNotAKey if text is not a key.
func (g *gate) lookup(text string, now time.Time) (knownEntry, error) {
	var e knownEntry
	hit := false
	g.known.with(text, now, func(k *knownEntry) {
		if now.Before(k.until) {
			e, hit = *k, true
		}
	})
	if hit {
		return e, nil
	}
	key, err := kez.ParsePublicKey(text)
	if err != nil {
		return knownEntry{}, errNotAKey
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	entry, err := g.dir.Lookup(ctx, key)
	ttl := g.lim.KnownTTL
	switch {
	case errors.Is(err, callout.ErrUnknownKey):
		e, ttl = knownEntry{state: keyUnknown}, ttl/10
	case errors.Is(err, callout.ErrRevokedKey):
		e, ttl = knownEntry{state: keyRevoked}, revokedTTL
	case err != nil:
		return knownEntry{}, err
	default:
		e = knownEntry{state: keyRegistered, person: text}
		if !entry.Person.IsZero() {
			e.person = entry.Person.String()
		}
	}
	e.until = now.Add(ttl)
	g.known.with(text, now, func(k *knownEntry) { *k = e })
	return e, nil
}

// revokedTTL is how long the gate keeps a revoked device's state: a
// revocation is permanent, and a forgotten one is looked up again.
const revokedTTL = time.Hour

// senderPerson returns the person whose buckets a send from the device
// with text form sender draws on, and false if the device is revoked. A
// key the registry does not know (its handle released meanwhile) or a
// registry that does not answer leaves the key its own person: the
// callout admitted it, and its login ends with its user JWT.
func (g *gate) senderPerson(sender string, now time.Time) (string, bool) {
	e, err := g.lookup(sender, now)
	switch {
	case err != nil:
		g.log.Debug("gate: cannot look up a sender", "sender", sender, "err", err)
		return sender, true
	case e.state == keyRevoked:
		return "", false
	case e.state == keyRegistered:
		return e.person, true
	}
	return sender, true
}

// revoked reports whether the key with text form t is a revoked device
// (false when the registry does not answer).
func (g *gate) revoked(t string, now time.Time) bool {
	e, err := g.lookup(t, now)
	return err == nil && e.state == keyRevoked
}

// markRevoked records at once that device was revoked.
func (g *gate) markRevoked(device kez.PublicKey, now time.Time) {
	g.known.with(device.String(), now, func(k *knownEntry) { *k = knownEntry{state: keyRevoked, until: now.Add(revokedTTL)} })
	g.ensured.Delete(callout.ConsumerName(device))
}

// onRevoked handles kez.v1.revoked: another chat-server stored a
// revocation. The body names the device; the gate forgets what it knew
// of that key, so that its next request is looked up in the registry.
// Nothing else is trusted from the message (in the chat account, an
// operator's admin login can make the server publish its answers here),
// so a bogus notice costs one registry lookup.
func (g *gate) onRevoked(m *nats.Msg) {
	k, err := kez.ParsePublicKey(string(m.Data))
	if err != nil {
		return
	}
	if g.notices != nil && m.Header.Get(revokedFromHeader) != g.self {
		g.notices.Inc()
	}
	now := g.now()
	g.known.with(k.String(), now, func(e *knownEntry) { *e = knownEntry{} })
	g.ensured.Delete(callout.ConsumerName(k))
	g.forgetDigests("")
	g.log.Debug("gate: a device was revoked elsewhere", "device", k)
	g.forgetAfterSync(k)
}

// maxResync bounds the keys waiting for forgetAfterSync.
const maxResync = 1024

// forgetAfterSync forgets what the gate knows of k again once the
// registry's view has caught up (the view may learn of a revocation a
// moment later than the notice came). One sync at a time serves every
// key noticed meanwhile, so a flood of notices costs one registry read a
// round.
func (g *gate) forgetAfterSync(k kez.PublicKey) {
	if g.syncDir == nil {
		return
	}
	g.resyncMu.Lock()
	defer g.resyncMu.Unlock()
	if g.resyncKeys == nil {
		g.resyncKeys = map[kez.PublicKey]struct{}{}
	}
	if len(g.resyncKeys) < maxResync {
		g.resyncKeys[k] = struct{}{}
	}
	if g.resyncing {
		return
	}
	g.resyncing = true
	go func() {
		for {
			g.resyncMu.Lock()
			keys := g.resyncKeys
			g.resyncKeys = nil
			if len(keys) == 0 {
				g.resyncing = false
				g.resyncMu.Unlock()
				return
			}
			g.resyncMu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := g.syncDir(ctx)
			cancel()
			if err != nil {
				continue // the view is behind or stale: its own bound holds
			}
			now := g.now()
			for k := range keys {
				g.known.with(k.String(), now, func(e *knownEntry) { *e = knownEntry{} })
			}
		}
	}()
}

// clearDevice deletes a revoked device's consumer and purges its inbox:
// nothing stored for it stays readable, and nothing it may still pull.
func (g *gate) clearDevice(ctx context.Context, device kez.PublicKey) error {
	if g.js == nil {
		return errors.New("not connected to JetStream yet")
	}
	name := callout.ConsumerName(device)
	g.ensured.Delete(name)
	if err := g.js.DeleteConsumer(ctx, g.stream, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("deleting the consumer %s: %w", name, err)
	}
	st, err := g.js.Stream(ctx, g.stream)
	if err != nil {
		return err
	}
	if err := st.Purge(ctx, jetstream.WithPurgeSubject(callout.InboxSubjectPrefix+device.String()+".>")); err != nil {
		return fmt.Errorf("purging the inbox of %s: %w", device, err)
	}
	return nil
}
