package bench

// The format v2 half of the messaging rig: an established Double Ratchet
// session (package session, docs/spec/session.md) between every sender
// and every receiver, set up before anything is timed, and the same
// traffic as the v1 figures sealed in those sessions.

import (
	"crypto/ecdh"
	"crypto/hpke"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/session"
	"github.com/nats-io/nats.go/jetstream"
)

// Targets of the session figures (docs/performance.md), stated for
// messages of sessionTargetSize bytes; other sizes are reported without.
const (
	sessionTargetSize = 256
	sessionRateTarget = 0.5 // session msgs/s ÷ raw JetStream msgs/s, at least
	sessionP50Target  = 1.3 // session p50 ÷ raw JetStream p50, at most
	sessionCPUTarget  = 5.0 // µs of crypto CPU per message, at most
)

// innerV2Overhead is what chat's inner message v2 of a text message adds
// to its body (docs/spec/chat.md §7: the ID, sent_at, the kind, no ref,
// the body's length): a session envelope of the rig carries a plaintext of
// that size, so that "256 B" means what it means for a v1 envelope.
const innerV2Overhead = len(chat.MessageID{}) + 8 + 1 + len(chat.KindText) + 1 + 4

// sessionPlaintext returns the plaintext of one session message of the
// rig: id, then the body, padded to the size of chat's inner message.
func sessionPlaintext(id chat.MessageID, body []byte) []byte {
	pt := make([]byte, innerV2Overhead+len(body))
	copy(pt, id[:])
	copy(pt[innerV2Overhead:], body)
	return pt
}

// sessionPair is one session seen from both ends: a is the initiator's
// (the sender's), b the acceptor's (the receiver's).
type sessionPair struct{ a, b *session.Session }

// newSessionPair sets up a session from one identity to another, as two
// clients do on the wire but in memory: Initiate to the receiver's
// prekey, the handshake opened by Accept, a reply that establishes the
// session at its initiator, and one more message from the initiator (its
// DH ratchet step), so that what follows is the steady state: type-2
// messages, no public-key work.
func newSessionPair(from, to *kez.Identity, prekey *session.PrekeyPrivate, now time.Time) (sessionPair, error) {
	lookup := func(id uint32) (*session.PrekeyPrivate, bool) { return prekey, id == prekey.Public.ID }
	a, err := session.Initiate(nil, from, &prekey.Public, now)
	if err != nil {
		return sessionPair{}, err
	}
	hello := []byte("kez-bench hello")
	env, err := a.Seal(nil, hello)
	if err != nil {
		return sessionPair{}, err
	}
	b, _, err := session.Accept(to, env, lookup, now)
	if err != nil {
		return sessionPair{}, fmt.Errorf("accepting the handshake: %w", err)
	}
	for _, step := range []struct{ from, to *session.Session }{{b, a}, {a, b}} {
		if env, err = step.from.Seal(nil, hello); err == nil {
			_, err = step.to.Open(env, now)
		}
		if err != nil {
			return sessionPair{}, err
		}
	}
	if !a.Established() || !b.Established() {
		return sessionPair{}, errors.New("the session is not established at both ends")
	}
	return sessionPair{a, b}, nil
}

// setupSessions gives every receiver a prekey (session.NewPrekey, checked
// with Verify as a sender checks a fetched one), every sender an
// established session to every receiver, and the crypto floor a session
// pair of its own per goroutine (they never touch the wire's sessions).
func (r *msgRig) setupSessions(now time.Time) error {
	for i, to := range r.receivers {
		k, err := session.NewPrekey(nil, to.Identity, uint32(i+1), now, session.DefaultPrekeyLifetime)
		if err != nil {
			return err
		}
		if err := k.Public.Verify(to.Key, now); err != nil {
			return err
		}
		to.prekey, to.opens = k, map[string]*session.Session{}
	}
	for _, s := range r.senders {
		s.seals = map[kez.PublicKey]*session.Session{}
		for _, to := range r.receivers {
			p, err := newSessionPair(s.Identity, to.Identity, to.prekey, now)
			if err != nil {
				return fmt.Errorf("a session from %s to %s: %w", s.Name, to.Name, err)
			}
			s.seals[to.Key], to.opens[s.Key.String()] = p.a, p.b
		}
	}
	r.floorPairs = nil
	for w := range runtime.GOMAXPROCS(0) {
		s, to := r.senders[w%len(r.senders)], r.receivers[w%len(r.receivers)]
		p, err := newSessionPair(s.Identity, to.Identity, to.prekey, now)
		if err != nil {
			return fmt.Errorf("a session of the crypto floor: %w", err)
		}
		r.floorPairs = append(r.floorPairs, p)
	}
	return nil
}

// openSession is a receiver's handler of a session envelope: the session
// of the subject's sender opens it, and the plaintext must start with the
// message ID its publish carried (the gate prefixes the Nats-Msg-Id with
// the sender's key). Only then is the message counted as opened.
func (r *msgRig) openSession(mu *msgUser, m jetstream.Msg) {
	subj := m.Subject()
	from := subj[strings.LastIndexByte(subj, '.')+1:]
	s, ok := mu.opens[from]
	if !ok {
		r.fail(fmt.Errorf("no session with the sender %q", from))
		return
	}
	pt, err := s.Open(m.Data(), time.Now())
	if err != nil {
		r.fail(err)
		return
	}
	var id [2 * len(chat.MessageID{})]byte
	if len(pt) < len(chat.MessageID{}) {
		r.fail(fmt.Errorf("a session message of %d bytes", len(pt)))
		return
	}
	hex.Encode(id[:], pt[:len(chat.MessageID{})])
	// A copy to one of a person's devices carries "-<device>" after the
	// ID (devices.go), as chat.Client's copies do: it must name this one.
	if msgID := m.Headers().Get(jetstream.MsgIDHeader); !strings.HasSuffix(msgID, string(id[:])) &&
		!strings.HasSuffix(msgID, string(id[:])+"-"+mu.Key.String()) {
		r.fail(fmt.Errorf("a session message holds ID %s, its publish was %q", id[:], msgID))
		return
	}
	r.opened.Add(1)
}

// sessionFloor seals and opens total messages in the floor's sessions,
// one goroutine per session pair (GOMAXPROCS of them), no network: the
// crypto of a session message and nothing else.
func (r *msgRig) sessionFloor(body []byte, total int) (time.Duration, error) {
	pt := sessionPlaintext(chat.NewMessageID(), body)
	now := time.Now()
	return parallel(len(r.floorPairs), total, func(w, _ int) error {
		p := r.floorPairs[w]
		env, err := p.a.Seal(nil, pt)
		if err != nil {
			return err
		}
		got, err := p.b.Open(env, now)
		if err == nil && len(got) != len(pt) {
			err = fmt.Errorf("opened %d bytes of %d", len(got), len(pt))
		}
		return err
	})
}

// cpuRun runs op n times on this goroutine and adds the process CPU and
// the wall time they took to cpu and wall.
func cpuRun(n int, cpu, wall *time.Duration, op func() error) error {
	c0, t0 := selfCPU(), time.Now()
	for range n {
		if err := op(); err != nil {
			return err
		}
	}
	*wall += time.Since(t0)
	*cpu += selfCPU() - c0
	return nil
}

// measureHandshakes measures what a new session costs, from sender s to
// receiver to with a 256-byte message: the hybrid handshake through
// package session against a v1 seal and open of the same message, and the
// handshake's KEM (MLKEM768-X25519) against DHKEM(X25519), the only part
// an X25519-only handshake would do differently. Each is done cfg.Handshakes
// times on one goroutine, in alternating rounds.
func measureHandshakes(cfg Config, s, to *msgUser) ([]Figure, error) {
	now := time.Now()
	body := make([]byte, sessionTargetSize)
	pt := sessionPlaintext(chat.NewMessageID(), body)
	lookup := func(id uint32) (*session.PrekeyPrivate, bool) { return to.prekey, id == to.prekey.Public.ID }
	handshake := func() error {
		a, err := session.Initiate(nil, s.Identity, &to.prekey.Public, now)
		if err != nil {
			return err
		}
		env, err := a.Seal(nil, pt)
		if err != nil {
			return err
		}
		_, got, err := session.Accept(to.Identity, env, lookup, now)
		if err == nil && len(got) != len(pt) {
			err = fmt.Errorf("the handshake carried %d bytes of %d", len(got), len(pt))
		}
		return err
	}
	v1 := func() error {
		env, err := chat.Seal(s.Identity, to.rcpt, chat.Message{ID: chat.NewMessageID(), Kind: chat.KindText, Body: body})
		if err == nil {
			_, err = to.opener.Open(env, s.Key)
		}
		return err
	}
	hybrid, err := hpke.NewKEM(session.KEMHybrid)
	if err != nil {
		return nil, err
	}
	kemHybrid, err := kemOp(hybrid)
	if err != nil {
		return nil, err
	}
	kemX25519, err := kemOp(hpke.DHKEM(ecdh.X25519()))
	if err != nil {
		return nil, err
	}

	ops := []func() error{handshake, v1, kemHybrid, kemX25519}
	cpu, wall := make([]time.Duration, len(ops)), make([]time.Duration, len(ops))
	rounds := max(1, cfg.Rounds)
	per := max(1, cfg.Handshakes/rounds)
	for range rounds {
		for i, op := range ops {
			if err := cpuRun(per, &cpu[i], &wall[i], op); err != nil {
				return nil, err
			}
		}
	}
	n := float64(per * rounds)
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 / n }
	return []Figure{
		{Group: "messaging", Name: "session handshake, hybrid, 256 B", Unit: "µs", Value: us(cpu[0]),
			Baseline: "v1 seal+open 256 B", Base: us(cpu[1]),
			Note: fmt.Sprintf("CPU per new session, one goroutine: session.Initiate to the receiver's prekey (MLKEM768-X25519) + the first Seal (a type-1 handshake carrying the message) + session.Accept, %.0f µs wall; "+
				"the prekey record's Verify (once per fetched record) not counted. Baseline: CPU of one v1 chat.Seal + Opener.Open of the same body, same goroutine, alternating rounds (%.0f µs wall). "+
				"Format v2 has no X25519-only handshake to drive; the KEM figure below is the whole difference, and go test ./session -bench Handshake measures an X25519-only one through the same code",
				us(wall[0]), us(wall[1]))},
		{Group: "messaging", Name: "handshake KEM, MLKEM768-X25519", Unit: "µs", Value: us(cpu[2]),
			Baseline: "DHKEM(X25519)", Base: us(cpu[3]),
			Note: "CPU of one HPKE base-mode setup at each end (crypto/hpke NewSender + NewRecipient, HKDF-SHA256, ChaCha20-Poly1305, the 32-byte export a session's root key is): " +
				"what a hybrid handshake pays over an X25519-only one"},
	}, nil
}

// kemOp returns one HPKE setup at both ends with kem, as a handshake does
// it (docs/spec/session.md): a fresh key pair once, then per call an
// encapsulation, a decapsulation and the exported secret of each end,
// which must agree.
func kemOp(kem hpke.KEM) (func() error, error) {
	sk, err := kem.GenerateKey()
	if err != nil {
		return nil, err
	}
	pk := sk.PublicKey()
	info := []byte("kez-bench handshake KEM")
	return func() error {
		enc, snd, err := hpke.NewSender(pk, hpke.HKDFSHA256(), hpke.ChaCha20Poly1305(), info)
		if err != nil {
			return err
		}
		rcv, err := hpke.NewRecipient(enc, sk, hpke.HKDFSHA256(), hpke.ChaCha20Poly1305(), info)
		if err != nil {
			return err
		}
		a, err := snd.Export("kez-bench root", 32)
		if err != nil {
			return err
		}
		b, err := rcv.Export("kez-bench root", 32)
		if err != nil {
			return err
		}
		if string(a) != string(b) {
			return errors.New("the KEM's two ends disagree")
		}
		return nil
	}, nil
}

// lastError keeps the last error the rig's goroutines met (of any type,
// which an atomic.Value does not allow).
type lastError struct{ p atomic.Pointer[error] }

func (l *lastError) set(err error) { l.p.Store(&err) }

func (l *lastError) get() error {
	if p := l.p.Load(); p != nil {
		return *p
	}
	return nil
}
