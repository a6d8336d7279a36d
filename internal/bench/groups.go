package bench

// Groups: one sender-key envelope delivered by one multi-recipient send
// (kez.v1.msend) against the same message sent one to one to every
// member; the rekey after a removal; the time for a new member to read.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/session"
)

// groupMessageSize is the size of the measured group message's text.
const groupMessageSize = 256

// groupSendTarget is the target of the group send's cost over the one to
// one sends to every member (issue 17).
const groupSendTarget = 0.2

// groupAddBatch is how many members one add link names at most.
const groupAddBatch = 256

// publishPrekeys publishes a prekey for each user, as their client would
// on its first start, so that the sender's first message to each opens a
// session (format 2) instead of falling back to format 1.
func (s *Stack) publishPrekeys(ctx context.Context, users []*User) error {
	sigc, _ := s.apiClients()
	var wg sync.WaitGroup
	var errs lastError
	sem := make(chan struct{}, 8)
	for _, u := range users {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			p, err := session.NewPrekey(nil, u.Identity, 1, time.Now(), session.DefaultPrekeyLifetime)
			if err == nil {
				err = sigc.PublishPrekey(ctx, &p.Public)
			}
			if err != nil {
				errs.set(fmt.Errorf("publishing the prekey of %s: %w", u.Name, err))
			}
		})
	}
	wg.Wait()
	return errs.get()
}

// handlesOf returns the users' names (handles of the stack's domain).
func handlesOf(users []*User) []string {
	hs := make([]string, len(users))
	for i, u := range users {
		hs[i] = u.Name
	}
	return hs
}

// addMembers adds users to the group, groupAddBatch a link.
func addMembers(ctx context.Context, c *chat.Client, name string, users []*User) error {
	for start := 0; start < len(users); start += groupAddBatch {
		if err := c.AddGroupMembers(ctx, name, handlesOf(users[start:min(start+groupAddBatch, len(users))])...); err != nil {
			return fmt.Errorf("adding members to %s: %w", name, err)
		}
	}
	return nil
}

// inBytes returns how many bytes the NATS server has received from the
// connection logged in with key (its "U…" text), from NATS's monitoring
// (connz); ok is false when the stack has no monitoring URL.
func (s *Stack) inBytes(ctx context.Context, key string) (n int64, ok bool, err error) {
	if s.dev == nil || s.dev.NATSMonitor == "" {
		return 0, false, nil
	}
	q := url.Values{"auth": {"true"}, "user": {key}, "acc": {"USERS"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.dev.NATSMonitor+"/connz?"+q.Encode(), nil)
	if err != nil {
		return 0, false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	var cz struct {
		Conns []struct {
			InBytes int64  `json:"in_bytes"`
			User    string `json:"authorized_user"`
		} `json:"connections"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&cz); err != nil {
		return 0, false, fmt.Errorf("reading NATS's connz: %w", err)
	}
	for _, c := range cz.Conns {
		if c.User == key {
			n += c.InBytes
			ok = true
		}
	}
	return n, ok, nil
}

// measureGroups measures the groups figures: the sender kbg0 (an owner
// with one device) and members kbg1… each with one device (their
// prekeys published; they do not run clients, only the new member of
// the last figure does).
func measureGroups(ctx context.Context, st *Stack, cfg Config) ([]Figure, error) {
	users, err := st.Register(ctx, "kbg", cfg.RekeyMembers+1, 8)
	if err != nil {
		return nil, err
	}
	owner, members, newcomer := users[0], users[1:cfg.RekeyMembers], users[cfg.RekeyMembers]
	if err := st.publishPrekeys(ctx, users[1:]); err != nil {
		return nil, err
	}
	f, rctx, err := newClientFleet(ctx, "kez-bench-groups-")
	if err != nil {
		return nil, err
	}
	defer f.close()
	oc, err := f.open(ctx, st, owner, owner)
	if err != nil {
		return nil, err
	}
	// A name of its own for each run (an external stack keeps groups).
	name := "kbg" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if _, err := oc.CreateGroup(ctx, name, "kez-bench"); err != nil {
		return nil, fmt.Errorf("creating the group: %w", err)
	}
	send, err := measureGroupSend(ctx, st, cfg, oc, name, members[:cfg.GroupSize])
	if err != nil {
		return nil, err
	}
	out := []Figure{*send}
	rekey, err := measureRekey(ctx, st, cfg, oc, owner, name, members)
	if err != nil {
		return out, err
	}
	out = append(out, *rekey)
	join, err := measureJoin(ctx, rctx, st, f, oc, owner, name, newcomer)
	if err != nil {
		return out, err
	}
	return append(out, *join), nil
}

// measureGroupSend times cfg.GroupMessages messages of 256 B to a group of
// cfg.GroupSize members (SendGroup: one envelope, one multi-recipient
// send, returning once the gate stored it) against the same message sent
// one to one to each member (Send to each, all published before the
// answers are awaited), in alternating rounds, after a first message of
// each kind that makes the sessions and distributes the sender key.
func measureGroupSend(ctx context.Context, st *Stack, cfg Config, oc *chat.Client, name string, members []*User) (*Figure, error) {
	if err := addMembers(ctx, oc, name, members); err != nil {
		return nil, err
	}
	for _, m := range members {
		if _, err := oc.AddContact(ctx, m.Name); err != nil {
			return nil, fmt.Errorf("adding contact %s: %w", m.Name, err)
		}
	}
	text := strings.Repeat("g", groupMessageSize)
	oneToOne := func() error {
		ps := make([]*chat.Pending, 0, len(members))
		for _, m := range members {
			p, err := oc.SendAsync(ctx, m.Name, text)
			if err != nil {
				return err
			}
			ps = append(ps, p)
		}
		for _, p := range ps {
			if _, err := p.Wait(ctx); err != nil {
				return err
			}
		}
		return nil
	}
	// The first of each: sessions made, the sender key distributed.
	if _, err := oc.SendGroup(ctx, name, text); err != nil {
		return nil, fmt.Errorf("the first group message: %w", err)
	}
	if err := oneToOne(); err != nil {
		return nil, fmt.Errorf("the first one-to-one round: %w", err)
	}
	rounds := max(1, cfg.Rounds)
	per := max(1, cfg.GroupMessages/rounds)
	var grp, one phaseTime
	cpuGrp, cpuOne := make([]time.Duration, 3), make([]time.Duration, 3)
	var names []string
	for range rounds {
		m := st.cpuMeter()
		start := time.Now()
		for range per {
			if _, err := oc.SendGroup(ctx, name, text); err != nil {
				return nil, fmt.Errorf("group message: %w", err)
			}
		}
		grp.add(per, time.Since(start))
		addCPU(cpuGrp, m.used())
		m = st.cpuMeter()
		start = time.Now()
		for range per {
			if err := oneToOne(); err != nil {
				return nil, fmt.Errorf("one-to-one round: %w", err)
			}
		}
		one.add(per, time.Since(start))
		addCPU(cpuOne, m.used())
		names = m.names
	}
	ms := func(p phaseTime) float64 { return 1000 / p.rate() }
	return &Figure{
		Group: "groups", Name: fmt.Sprintf("a %s message to a group of %d (1 device each)", sizeLabel(groupMessageSize), len(members)), Unit: "ms",
		Value: ms(grp), Baseline: fmt.Sprintf("the same message sent one to one to each of the %d", len(members)), Base: ms(one),
		Goal: MaxRatio, Target: groupSendTarget, CPURatio: cpuRatio(cpuOne, one.n, cpuGrp, grp.n),
		Note: fmt.Sprintf("wall time per message (median of %d rounds of %d, alternating): chat.Client.SendGroup seals one format 3 envelope with the sender key "+
			"and publishes it once on kez.v1.msend (the gate stores a copy per member device), returning on the gate's one answer; "+
			"the baseline seals %d session messages and publishes each on kez.v1.send, returning when the stream acknowledged all. "+
			"CPU per message, group / one to one: %s / %s",
			rounds, per, len(members), perOp(names, cpuGrp, grp.n), perOp(names, cpuOne, one.n)),
	}, nil
}

// measureRekey grows the group to cfg.RekeyMembers, sends once to it
// (sessions and the sender key), then times one plain message and, after
// removing one member, the next message: the sender's new sender key
// distributed pairwise to every remaining member device (the lazy rekey;
// the envelopes in multi-recipient sends with a payload per device) and
// the message. The bytes are what the sender's connection uploaded,
// from NATS's monitoring, less the plain message's.
func measureRekey(ctx context.Context, st *Stack, cfg Config, oc *chat.Client, owner *User, name string, members []*User) (*Figure, error) {
	if err := addMembers(ctx, oc, name, members[cfg.GroupSize:]); err != nil {
		return nil, err
	}
	text := strings.Repeat("r", groupMessageSize)
	if _, err := oc.SendGroup(ctx, name, text); err != nil {
		return nil, fmt.Errorf("the first message to %d members: %w", len(members)+1, err)
	}
	key := owner.Key.String()
	timed := func() (time.Duration, int64, bool, error) {
		b0, ok0, err := st.inBytes(ctx, key)
		if err != nil {
			return 0, 0, false, err
		}
		start := time.Now()
		if _, err := oc.SendGroup(ctx, name, text); err != nil {
			return 0, 0, false, err
		}
		d := time.Since(start)
		b1, ok1, err := st.inBytes(ctx, key)
		return d, b1 - b0, ok0 && ok1, err
	}
	plainD, plainB, _, err := timed()
	if err != nil {
		return nil, fmt.Errorf("a message to %d members: %w", len(members), err)
	}
	removed := members[len(members)-1]
	if err := oc.RemoveGroupMembers(ctx, name, removed.Name); err != nil {
		return nil, fmt.Errorf("removing %s: %w", removed.Name, err)
	}
	rekeyD, rekeyB, bytesOK, err := timed()
	if err != nil {
		return nil, fmt.Errorf("the first message after the removal: %w", err)
	}
	bytes := "not measured (no NATS monitoring)"
	if bytesOK {
		bytes = fmt.Sprintf("%.1f KiB uploaded by the sender (%.0f B per member device), less the plain message's %.1f KiB",
			float64(rekeyB-plainB)/1024, float64(rekeyB-plainB)/float64(len(members)-1), float64(plainB)/1024)
	}
	return &Figure{
		Group: "groups", Name: fmt.Sprintf("rekey of a group of %d after a removal", len(members)+1), Unit: "ms",
		Value: float64(rekeyD.Microseconds()) / 1000, Baseline: "the same message before the removal", Base: float64(plainD.Microseconds()) / 1000,
		Note: fmt.Sprintf("one sender's first message after removing a member: a new sender key (epoch) distributed pairwise (group-key, "+
			"in the existing sessions; the envelopes in multi-recipient sends with a payload per device, up to 127 KiB each) to the %d remaining member devices, then the message; %s", len(members)-1, bytes),
	}, nil
}

// measureJoin times a new member, whose client runs, from the owner's add
// to the new member's client storing the owner's next message (which
// needs the new epoch's sender key, distributed to every member device).
func measureJoin(ctx, rctx context.Context, st *Stack, f *clientFleet, oc *chat.Client, owner *User, name string, newcomer *User) (*Figure, error) {
	nc, err := f.open(ctx, st, newcomer, newcomer)
	if err != nil {
		return nil, err
	}
	// The new member knows the owner: the group is joined at once, not
	// kept as an invitation (docs/spec/chat.md §10.9).
	if _, err := nc.AddContact(ctx, owner.Name); err != nil {
		return nil, fmt.Errorf("the new member adding the owner: %w", err)
	}
	got := make(chan struct{}, 1)
	f.wg.Go(func() {
		err := nc.Run(rctx, func(e *chat.Entry) {
			if e.Kind == chat.KindText && e.Group != "" && e.Trust == chat.TrustTrusted {
				select {
				case got <- struct{}{}:
				default:
				}
			}
		})
		if err != nil && !errors.Is(err, chat.ErrClosed) {
			f.runErr.set(err)
		}
	})
	start := time.Now()
	if err := oc.AddGroupMembers(ctx, name, newcomer.Name); err != nil {
		return nil, fmt.Errorf("adding %s: %w", newcomer.Name, err)
	}
	if _, err := oc.SendGroup(ctx, name, "welcome"); err != nil {
		return nil, fmt.Errorf("the message to the new member: %w", err)
	}
	sent := time.Since(start)
	wait := func(what string) error {
		select {
		case <-got:
			return nil
		case <-time.After(2 * time.Minute):
			return fmt.Errorf("the new member read %s within 2 minutes (%v); %s", what, f.runErr.get(), f.stats())
		}
	}
	if err := wait("nothing"); err != nil {
		return nil, err
	}
	d := time.Since(start)
	// The baseline: the next message, which needs no new key.
	start = time.Now()
	if _, err := oc.SendGroup(ctx, name, "again"); err != nil {
		return nil, fmt.Errorf("the next message to the new member: %w", err)
	}
	if err := wait("the next message"); err != nil {
		return nil, err
	}
	next := time.Since(start)
	return &Figure{
		Group: "groups", Name: "time for a new member to read", Unit: "ms", Value: float64(d.Microseconds()) / 1000,
		Baseline: "the next message to that member", Base: float64(next.Microseconds()) / 1000,
		Note: fmt.Sprintf("from the owner's AddGroupMembers (the add link, group-update to every member device) to the new member's client storing "+
			"the owner's next message (a new sender key distributed to every member device first); the owner's add and send took %d ms", sent.Milliseconds()),
	}, nil
}
