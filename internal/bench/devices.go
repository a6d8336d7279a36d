package bench

// The devices group (docs/performance.md, "Devices"): a person with
// several devices, each its own key, NATS login, consumer and sessions
// (docs/spec/chat.md, "Devices"). This file registers devices through the
// servers' APIs, as "kez link" and "kez devices add" do, and measures the
// fan-out of one logical message to every device of its recipient plus the
// sent copies to the sender's other devices, against one device to one
// device in the same rig and the same rounds.

import (
	"context"
	"crypto/sha512"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// fanoutTarget is the least the fan-out figure's ratio should be: one
// logical message is (recipient devices) + (sender devices − 1)
// envelopes, 7 in the default shape (5 and 3), so a ratio of 1/7 ≈ 0.14
// is what a rig limited by the work per envelope reaches; the target
// allows 30% more than that per envelope.
const fanoutTarget = 0.10

// syncSentOverhead is what a sent copy's plaintext carries beyond the
// message's own inner message (docs/spec/chat.md, "sync-sent"): the
// recipient person's key, the original kind's length and the kind, and
// the longer kind of the copy itself.
const syncSentOverhead = len(kez.PublicKey{}) + 1 + len(chat.KindText) + len("sync-sent") - len(chat.KindText)

// apiClients returns clients of the stack's sig-server and chat-server.
func (s *Stack) apiClients() (*sigchain.Client, *handles.Client) {
	hc := &http.Client{Timeout: 30 * time.Second}
	return &sigchain.Client{BaseURL: s.SigServerURL, HTTPClient: hc}, &handles.Client{BaseURL: s.ServerURL, HTTPClient: hc}
}

// deviceIdentity returns the deterministic key of a bench device, so a
// run against an external stack finds the devices of earlier runs.
func deviceIdentity(name string) (*kez.Identity, error) {
	seed := sha512.Sum512([]byte("kez-bench device " + name))
	return kez.FromSeed(seed[:])
}

// LinkDevice makes dev a device of person u through the servers' APIs, as
// "kez link" and "kez devices add" do: dev's signed link request, named
// name, is posted to the sig-server (POST /v1/links), then approved
// ([Stack.ApproveLink]). A device the chain already lists as current is
// left as it is (the link returned is nil): a run against an external
// stack reuses the devices of earlier runs. Links of one person must not
// be made concurrently.
func (s *Stack) LinkDevice(ctx context.Context, u *User, dev *kez.Identity, name string) (*sigchain.Link, error) {
	sigc, _ := s.apiClients()
	st, err := sigc.FetchVerified(ctx, u.Key, nil)
	if err != nil {
		return nil, fmt.Errorf("bench: fetching the chain of %s: %w", u.Name, err)
	}
	if d, ok := st.DeviceOf(dev.PublicKey()); ok {
		if d.Revoked {
			return nil, fmt.Errorf("bench: device %s of %s was revoked", name, u.Name)
		}
		return nil, nil
	}
	req, err := s.RequestLink(ctx, dev, name)
	if err != nil {
		return nil, err
	}
	return s.ApproveLink(ctx, u, req.Code())
}

// RequestLink is the new device's half of linking ("kez link"): dev signs
// a link request named name and posts it to the sig-server.
func (s *Stack) RequestLink(ctx context.Context, dev *kez.Identity, name string) (*sigchain.LinkRequest, error) {
	sigc, _ := s.apiClients()
	req, err := sigchain.NewLinkRequest(dev, name, time.Now())
	if err != nil {
		return nil, err
	}
	if err := sigc.PostLinkRequest(ctx, req); err != nil {
		return nil, fmt.Errorf("bench: posting the link request of %s: %w", name, err)
	}
	return req, nil
}

// ApproveLink is the approving half ("kez devices add CODE"): the request
// is fetched by its code from the sig-server and checked against it (and
// refused if a chain already took its device), u's
// primary key signs the add_device link on u's chain as fetched and
// verified now, the link is registered at the chat-server
// (POST /v1/devices), which lets the device log in as itself, and
// appended to the chain at the sig-server, in that order.
func (s *Stack) ApproveLink(ctx context.Context, u *User, code sigchain.LinkCode) (*sigchain.Link, error) {
	sigc, hands := s.apiClients()
	req, person, err := sigc.FetchLinkRequest(ctx, code)
	if err != nil {
		return nil, fmt.Errorf("bench: fetching link request %s: %w", code, err)
	}
	if req.Code() != code {
		return nil, fmt.Errorf("bench: link code %s fetched another request", code)
	}
	if !person.IsZero() {
		return nil, fmt.Errorf("bench: link code %s was used already, by %s", code, person)
	}
	if err := req.CheckFresh(time.Now()); err != nil {
		return nil, err
	}
	link, err := s.newLink(ctx, sigc, u, sigchain.TypeAddDevice, sigchain.AddDeviceBody(req))
	if err != nil {
		return nil, err
	}
	if _, _, err := hands.RegisterDevice(ctx, link.Bytes()); err != nil {
		return nil, fmt.Errorf("bench: registering device %s at the chat-server: %w", req.Name(), err)
	}
	if err := sigc.Append(ctx, link); err != nil {
		return nil, fmt.Errorf("bench: appending the add_device link of %s: %w", req.Name(), err)
	}
	return link, nil
}

// RevokeDevice revokes device dev of person u as "kez devices revoke"
// does: the revoke_device link appended to u's chain at the sig-server,
// then registered at the chat-server (POST /v1/devices). It returns when
// the chat-server has answered, the moment the revocation is registered
// there.
func (s *Stack) RevokeDevice(ctx context.Context, u *User, dev kez.PublicKey) (*sigchain.Link, error) {
	r, err := s.revoke(ctx, u, dev)
	return r.link, err
}

// revoked is a revocation [Stack.revoke] made: its link, and when its
// POST /v1/devices was sent and answered.
type revoked struct {
	link           *sigchain.Link
	sent, answered time.Time
}

func (s *Stack) revoke(ctx context.Context, u *User, dev kez.PublicKey) (revoked, error) {
	sigc, hands := s.apiClients()
	link, err := s.newLink(ctx, sigc, u, sigchain.TypeRevokeDevice, sigchain.RevokeDeviceBody(dev))
	if err != nil {
		return revoked{}, err
	}
	if err := sigc.Append(ctx, link); err != nil {
		return revoked{}, fmt.Errorf("bench: appending the revocation of %s: %w", dev, err)
	}
	r := revoked{link: link, sent: time.Now()}
	if _, _, err := hands.RegisterDevice(ctx, link.Bytes()); err != nil {
		return revoked{}, fmt.Errorf("bench: registering the revocation of %s at the chat-server: %w", dev, err)
	}
	r.answered = time.Now()
	return r, nil
}

// newLink signs a link of type typ on u's chain, as fetched and verified
// now.
func (s *Stack) newLink(ctx context.Context, sigc *sigchain.Client, u *User, typ string, body []byte) (*sigchain.Link, error) {
	st, err := sigc.FetchVerified(ctx, u.Key, nil)
	if err != nil {
		return nil, fmt.Errorf("bench: fetching the chain of %s: %w", u.Name, err)
	}
	return sigchain.NewLink(u.Identity, st, typ, body, time.Now())
}

// devicesOf returns person u as its primary device followed by n-1 linked
// devices named after u (deterministic keys, see [deviceIdentity]), each
// as a *User of its own (Key the device key) to log in with.
func (s *Stack) devicesOf(ctx context.Context, u *User, n int) ([]*User, error) {
	out := []*User{u}
	for i := 1; i < n; i++ {
		name := fmt.Sprintf("%s-d%d", u.Name, i)
		id, err := deviceIdentity(name)
		if err != nil {
			return nil, err
		}
		if _, err := s.LinkDevice(ctx, u, id, name); err != nil {
			return nil, err
		}
		out = append(out, &User{Name: name, Identity: id, Key: id.PublicKey()})
	}
	return out, nil
}

// fanoutRig is the messaging rig for devices: the sending device first
// among the rig's senders (the only one that publishes), its person's
// other devices and the recipient person's devices among its receivers,
// each logged in with its own key and pulling from its own consumer, and
// an established session from the sending device to each of them.
type fanoutRig struct {
	*msgRig
	from       *msgUser
	recipients []*msgUser // the recipient person's devices, primary first
	own        []*msgUser // the sender's other devices
}

// newFanoutRig logs the devices in and sets up the sessions.
func newFanoutRig(ctx context.Context, st *Stack, sender, recipient []*User) (*fanoutRig, error) {
	users := append([]*User{sender[0]}, recipient...)
	users = append(users, sender[1:]...)
	rig, err := newMsgRig(ctx, st, 1, users)
	if err != nil {
		return nil, err
	}
	if err := rig.setupSessions(time.Now()); err != nil {
		rig.close()
		return nil, fmt.Errorf("setting up the device sessions: %w", err)
	}
	return &fanoutRig{msgRig: rig, from: rig.senders[0], recipients: rig.receivers[:len(recipient)], own: rig.receivers[len(recipient):]}, nil
}

// fanout sends n logical messages from the sending device: each sealed in
// its own session to every device of to and, as a sent copy (a plaintext
// the size of chat's sync-sent copy), to every device of own, each copy
// published on kez.v1.send.<device>.<sending device> with the Nats-Msg-Id
// chat.Client gives it (the message ID, "-", the device). It returns the
// time from the first seal until every copy was received and opened.
func (f *fanoutRig) fanout(ctx context.Context, to, own []*msgUser, body []byte, n int) (time.Duration, error) {
	r := f.msgRig
	copies := len(to) + len(own)
	r.mode.Store(modeSession)
	r.received.Store(0)
	r.target.Store(int64(n * copies))
	errs0, opened0 := r.pubErrs.Load(), r.opened.Load()
	sent := make([]byte, syncSentOverhead+len(body))
	copy(sent[syncSentOverhead:], body)
	start := time.Now()
	for range n {
		id := chat.NewMessageID()
		for k, d := range slices.Concat(to, own) {
			msg := nats.NewMsg(callout.SendSubjectPrefix + d.Key.String() + "." + f.from.Key.String())
			msg.Header.Set(jetstream.MsgIDHeader, id.String()+"-"+d.Key.String())
			pt := cond(k < len(to), body, sent)
			env, err := f.from.seals[d.Key].Seal(nil, sessionPlaintext(id, pt))
			if err != nil {
				return 0, err
			}
			msg.Data = env
			if _, err := f.from.js.PublishMsgAsync(msg); err != nil {
				return 0, err
			}
		}
	}
	<-f.from.js.PublishAsyncComplete()
	if k := r.pubErrs.Load() - errs0; k > 0 {
		return 0, fmt.Errorf("%d publishes failed: %v", k, r.lastErr.get())
	}
	select {
	case <-r.done:
		d := time.Since(start)
		if k := r.opened.Load() - opened0; k != int64(n*copies) {
			return 0, fmt.Errorf("%d of %d device copies opened; last error: %v", k, n*copies, r.lastErr.get())
		}
		return d, nil
	case <-time.After(2 * time.Minute):
		return 0, fmt.Errorf("received %d of %d device copies within 2 minutes", r.received.Load(), n*copies)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// measureFanout measures logical messages per second from a person with
// cfg.SenderDevices devices to one with cfg.RecipientDevices devices:
// through chat.Client against one chat.Client to another (of persons one
// and to), then in the messaging rig's sessions against one device to one
// device (the same sending device to the recipient's primary, nothing
// else), each alternating with its baseline in rounds.
func measureFanout(ctx context.Context, st *Stack, cfg Config, sender, recipient, one, to *User) ([]Figure, error) {
	sdevs, err := st.devicesOf(ctx, sender, cfg.SenderDevices)
	if err != nil {
		return nil, err
	}
	rdevs, err := st.devicesOf(ctx, recipient, cfg.RecipientDevices)
	if err != nil {
		return nil, err
	}
	cf, err := measureClientFanout(ctx, st, cfg, sdevs, rdevs, one, to)
	if err != nil {
		return nil, fmt.Errorf("through chat.Client: %w", err)
	}
	rf, err := measureRigFanout(ctx, st, cfg, sdevs, rdevs)
	if err != nil {
		return []Figure{*cf}, err
	}
	return []Figure{*cf, *rf}, nil
}

// measureRigFanout is measureFanout's figure in the messaging rig.
func measureRigFanout(ctx context.Context, st *Stack, cfg Config, sdevs, rdevs []*User) (*Figure, error) {
	rig, err := newFanoutRig(ctx, st, sdevs, rdevs)
	if err != nil {
		return nil, err
	}
	defer rig.close()
	body := []byte(strings.Repeat("k", sessionTargetSize))
	rounds := max(1, cfg.Rounds)
	per := max(1, cfg.DeviceMessages/rounds)
	var base, fan phaseTime
	var cpuOne, cpuFan = make([]time.Duration, 3), make([]time.Duration, 3)
	var names []string
	for range rounds {
		m := st.cpuMeter()
		d, err := rig.fanout(ctx, rig.recipients[:1], nil, body, per)
		if err != nil {
			return nil, fmt.Errorf("1 device → 1 device: %w", err)
		}
		base.add(per, d)
		addCPU(cpuOne, m.used())
		m = st.cpuMeter()
		if d, err = rig.fanout(ctx, rig.recipients, rig.own, body, per); err != nil {
			return nil, fmt.Errorf("%d devices → %d devices: %w", len(sdevs), len(rdevs), err)
		}
		fan.add(per, d)
		addCPU(cpuFan, m.used())
		names = m.names
	}
	if n := rig.failed.Load(); n > 0 {
		return nil, fmt.Errorf("%d device copies did not open; last error: %v", n, rig.lastErr.get())
	}
	copies := len(rig.recipients) + len(rig.own)
	return &Figure{
		Group: "devices", Name: fmt.Sprintf("session messages, %d devices → %d devices, %s", len(sdevs), len(rdevs), sizeLabel(len(body))), Unit: "msgs/s",
		Value: fan.rate(), Baseline: "session 1 device → 1 device", Base: base.rate(), Goal: MinRatio, Target: fanoutTarget,
		CPURatio: cpuRatio(cpuOne, base.n, cpuFan, fan.n),
		Note: fmt.Sprintf("the messaging rig's sessions (format v2, package session), not chat.Client: a logical message from one device of a person with %d devices "+
			"to a person with %d devices is %d envelopes, each sealed in the session of its device pair and published on kez.v1.send.<device>.<sending device> "+
			"(Nats-Msg-Id <id>-<device>, as chat.Client does): one to each of the recipient's devices and a sent copy (%d B more plaintext) to each of the sender's other devices; "+
			"every device logs in with its own key (linked with add_device at the sig-server and POST /v1/devices at the chat-server) and pulls, opens and checks its copy. "+
			"Timed until every copy was opened: %s envelopes/s. Baseline, alternating rounds: the same sending device to the recipient's primary device only. "+
			"1/%d = %.2f is the ratio of a rig limited by the work per envelope. CPU per logical message, fan-out / 1→1: %s / %s",
			len(sdevs), len(rdevs), copies, syncSentOverhead, num(fan.rate()*float64(copies)), copies, 1/float64(copies),
			perOp(names, cpuFan, fan.n), perOp(names, cpuOne, base.n)),
	}, nil
}

// measureDevices registers the persons of the devices group (kbd0 sends
// to kbd1, kbd5 to kbd6 for the baseline; kbd2 links a device with its
// history with kbd4; kbd3 revokes devices) and measures the group's
// figures.
func measureDevices(ctx context.Context, st *Stack, cfg Config) ([]Figure, error) {
	users, err := st.Register(ctx, "kbd", 7, 4)
	if err != nil {
		return nil, err
	}
	out, err := measureFanout(ctx, st, cfg, users[0], users[1], users[5], users[6])
	if err != nil {
		return out, err
	}
	figs, err := measureHistory(ctx, st, cfg, users[2], users[4])
	if out = append(out, figs...); err != nil {
		return out, err
	}
	figs, err = measureRevocation(ctx, st, cfg, users[3])
	return append(out, figs...), err
}
