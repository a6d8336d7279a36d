package group

import (
	"context"
	"fmt"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// NewCreate builds and signs the create link of group name ("name@domain")
// for the person by, whose handle (of the same domain) is handle. signer
// is by's primary key or one of by's devices; title may be empty. The
// link is checked as [Verify] would, except for the device rule.
func NewCreate(signer kez.Signer, by kez.PublicKey, name, handle, title string, now time.Time) (*Link, error) {
	return build(signer, by, nil, name, TypeCreate, createBody(handle, title), now)
}

// NewLink builds and signs the link that follows prev: typ is [TypeAdd],
// [TypeRemove], [TypeRole] or [TypeTitle] and body is made by [AddBody],
// [RemoveBody], [RoleBody] or [TitleBody] (any JSON object is
// canonicalized first). by is the acting member and signer its primary
// key or one of its devices. The link is checked against prev with the
// rules of [State.Extend], except for the device rule (the caller knows
// its own devices), so a link that breaks a rule is never signed: the
// error is the same *[LinkError].
func NewLink(signer kez.Signer, by kez.PublicKey, prev *State, typ string, body []byte, now time.Time) (*Link, error) {
	if prev == nil {
		return nil, fmt.Errorf("group: a %s link needs the chain's state (use NewCreate to start one)", typ)
	}
	cb, err := sigchain.Canonicalize(body)
	if err != nil {
		return nil, fmt.Errorf("group: %w", err)
	}
	return build(signer, by, prev, prev.name, typ, cb, now)
}

func build(signer kez.Signer, by kez.PublicKey, prev *State, name, typ string, body []byte, now time.Time) (*Link, error) {
	ct := now.Unix()
	if ct < 0 || ct > maxSafeInt {
		return nil, fmt.Errorf("group: time %v is out of range", now)
	}
	seqno := uint64(1)
	var prevID *[32]byte
	if prev != nil {
		seqno = prev.seqno + 1
		prevID = &prev.head
	}
	head := appendHead(nil, name, seqno, prevID, ct, by, signer.PublicKey(), typ, body)
	sig, err := signer.Sign(kez.ContextGroupLink, append(head[:len(head):len(head)], '}'))
	if err != nil {
		return nil, fmt.Errorf("group: signing link: %w", err)
	}
	l, err := ParseLink(appendSig(head, sig))
	if err != nil {
		return nil, err
	}
	at := func() time.Time { return time.Unix(ct, 0) }
	anyDevice := func(context.Context, kez.PublicKey, kez.PublicKey, time.Time) error { return nil }
	if _, err := prev.Extend(context.Background(), [][]byte{l.raw}, anyDevice, WithClock(at)); err != nil {
		return nil, err
	}
	return l, nil
}
