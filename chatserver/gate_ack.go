package chatserver

import (
	"bytes"
	"fmt"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/nats-io/nats.go"
)

// Bounds of a batch of acknowledgements (kez.v1.ack.<key>).
const (
	maxAckLines = wire.MaxAckLines
	maxAckBody  = wire.MaxAckBytes
)

// ackResults are the label values of kez_chat_gate_ack_lines_total: lines
// passed on to JetStream, dropped as malformed or not the sender's own,
// and dropped over the sender's acknowledgement rate.
var ackResults = [3]string{"forwarded", "dropped", "limited"}

const (
	ackForwarded = iota
	ackDropped
	ackLimited
)

// onAck handles kez.v1.ack.<key>: a batch of the user's acknowledgements,
// one line each, "<verb> <ack subject>" (wire.AckSubjectPrefix). Each line
// naming a delivery of the user's own consumer with a verb the gate knows
// is published to its subject, with the body JetStream reads and no reply
// subject (and a +ACK or +TERM noted for the removal of read mail,
// gate_read.go); any other line is dropped and counted, at no cost to the
// user's acknowledgement bucket. Acknowledgements beyond the bucket are
// dropped too (JetStream delivers those
// messages again after the ack wait). It is not answered. It crossed from
// the user account as a stream: its reply subject, if any, is not used.
func (g *gate) onAck(m *nats.Msg) {
	t, ok := subjectKey(m.Subject, callout.AckSubjectPrefix)
	now := g.now()
	if !ok || !g.senderKey(t, now) {
		g.drop("ack", reasonForged)
		return
	}
	if g.revoked(t, now) {
		g.drop("ack", reasonRevoked)
		return
	}
	body := m.Data
	if len(body) > 0 && body[len(body)-1] == '\n' {
		body = body[:len(body)-1] // the last line's end
	}
	n := bytes.Count(body, []byte{'\n'}) + 1
	if len(m.Data) == 0 || len(m.Data) > maxAckBody || n > maxAckLines {
		if len(m.Data) > 0 {
			g.ackLines[ackDropped].Add(float64(n))
		}
		g.drop("ack", reasonBadRequest)
		return
	}
	// Only lines that are acknowledgements cost the user a token: what
	// reaches this subject is not always the user's own (the operator's
	// admin login may name it as a reply subject, and the server's answer
	// lands here), and junk must not spend the user's allowance.
	prefix := "$JS.ACK." + g.stream + "." + t + "."
	var counts [3]int
	type ack struct {
		subject string
		verb    []byte
	}
	var acks []ack // grown only for valid lines: junk allocates nothing
	for range n {
		var line []byte
		line, body, _ = bytes.Cut(body, []byte{'\n'})
		subject, verb, ok := ackLine(line, prefix)
		if !ok {
			counts[ackDropped]++
			continue
		}
		acks = append(acks, ack{subject, verb})
	}
	var allowed int
	if len(acks) > 0 {
		g.users.with(t, now, func(b *userBuckets) { allowed = b.acks.takeUpTo(now, g.lim.AckRate, g.lim.AckBurst, len(acks)) })
	}
	counts[ackLimited] = len(acks) - allowed
	var done int
	var top uint64
	for _, a := range acks[:allowed] {
		if err := g.nc.Publish(a.subject, a.verb); err != nil {
			counts[ackDropped]++
			continue
		}
		counts[ackForwarded]++
		if seq, ok := ackedSeq(a.subject, prefix, a.verb); ok {
			done++
			top = max(top, seq)
		}
	}
	if done > 0 {
		g.noteRead(t, done, top)
	}
	for i, c := range counts {
		if c > 0 {
			g.ackLines[i].Add(float64(c))
		}
	}
	switch {
	case counts[ackForwarded] > 0:
		g.acksForwarded.Inc()
	case counts[ackLimited] > 0:
		g.drop("ack", reasonAckQuota)
	default:
		g.drop("ack", reasonBadRequest)
	}
}

// ackLine parses one acknowledgement line, "<verb> <subject>", where the
// subject must be prefix (the sender's own consumer's "$JS.ACK.<stream>.
// <key>.") followed by five numbers (delivered, stream and consumer
// sequence, time, pending): the nine-token form nats-server delivers with.
// It returns the subject and the body JetStream reads: +ACK, -NAK, -NAK
// {"delay":ns} for "-NAK <Go duration>" (a positive one), +TERM or +WPI.
func ackLine(line []byte, prefix string) (subject string, body []byte, ok bool) {
	verb, rest, _ := bytes.Cut(line, []byte{' '})
	switch string(verb) {
	case wire.AckVerbAck, wire.AckVerbTerm, wire.AckVerbProgress:
		body = verb
	case wire.AckVerbNak:
		body = verb
		if d, subj, found := bytes.Cut(rest, []byte{' '}); found {
			delay, err := time.ParseDuration(string(d))
			if err != nil || delay < 0 {
				return "", nil, false
			}
			if delay > 0 {
				body = fmt.Appendf(nil, `%s {"delay":%d}`, wire.AckVerbNak, delay.Nanoseconds())
			}
			rest = subj
		}
	default:
		return "", nil, false
	}
	if !bytes.HasPrefix(rest, []byte(prefix)) || !ackNumbers(rest[len(prefix):]) {
		return "", nil, false
	}
	return string(rest), body, true
}

// ackNumbers reports whether s is five dot-separated decimal numbers of
// 1 to 20 digits each.
func ackNumbers(s []byte) bool {
	tokens, digits := 1, 0
	for _, c := range s {
		switch {
		case c == '.':
			if digits == 0 {
				return false
			}
			tokens, digits = tokens+1, 0
		case '0' <= c && c <= '9':
			if digits++; digits > 20 {
				return false
			}
		default:
			return false
		}
	}
	return tokens == 5 && digits > 0
}
