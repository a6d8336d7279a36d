package tcprec

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// NATSMsg is one message frame of the NATS client protocol: a PUB or HPUB
// a client sent, or a MSG or HMSG the server delivered.
type NATSMsg struct {
	Op      string // "PUB", "HPUB", "MSG" or "HMSG"
	Subject string
	Reply   string // "" if none
	// Header is the header block of an HPUB or HMSG ("NATS/1.0…\r\n\r\n"),
	// nil otherwise.
	Header  []byte
	Payload []byte
	// Start and End are the frame's offsets in the stream it was parsed
	// from (End exclusive).
	Start, End int

	// Set by Proxy.NATSMessages: the connection and direction, and the
	// Seq of the chunk that completed the frame.
	Conn int
	Dir  Dir
	Seq  int
}

// Before reports whether the frame was recorded entirely before m.
func (f NATSMsg) Before(m Mark) bool { return f.Seq < int(m) }

// maxControlLine bounds a protocol line without its payload (nats-server's
// default max_control_line is 4 KiB; CONNECT and INFO may be longer).
const maxControlLine = 1 << 20

// ParseNATS reads the NATS client protocol from one direction of one
// connection (either direction: the client's operations and the server's
// are told apart by name) and returns its message frames in order, and how
// many bytes of b it consumed: a frame cut off at the end of b is not
// returned, and is not consumed. Other operations (INFO, CONNECT, SUB,
// UNSUB, PING, PONG, +OK, -ERR) are skipped. Anything else, or a
// malformed frame, is an error wrapping ErrNotNATS.
func ParseNATS(b []byte) (msgs []NATSMsg, consumed int, err error) {
	pos := 0
	for pos < len(b) {
		eol := bytes.Index(b[pos:], []byte("\r\n"))
		if eol < 0 {
			if len(b)-pos > maxControlLine {
				return msgs, pos, fmt.Errorf("%w: a line longer than %d bytes at %d", ErrNotNATS, maxControlLine, pos)
			}
			return msgs, pos, nil
		}
		line := string(b[pos : pos+eol])
		body := pos + eol + 2
		f := strings.Fields(line)
		if len(f) == 0 {
			return msgs, pos, fmt.Errorf("%w: an empty line at %d", ErrNotNATS, pos)
		}
		op := strings.ToUpper(f[0])
		var m NATSMsg
		var hdr, total int
		switch op {
		case "INFO", "CONNECT", "SUB", "UNSUB", "PING", "PONG", "+OK", "-ERR":
			pos = body
			continue
		case "PUB": // PUB subject [reply] size
			err = frameArgs(&m, f, 1, &total)
		case "HPUB": // HPUB subject [reply] hdr_size total_size
			err = frameArgs(&m, f, 1, &hdr, &total)
		case "MSG": // MSG subject sid [reply] size
			err = frameArgs(&m, f, 2, &total)
		case "HMSG": // HMSG subject sid [reply] hdr_size total_size
			err = frameArgs(&m, f, 2, &hdr, &total)
		default:
			return msgs, pos, fmt.Errorf("%w: unknown operation %q at %d", ErrNotNATS, f[0], pos)
		}
		if err == nil && hdr > total {
			err = fmt.Errorf("header size %d over total size %d", hdr, total)
		}
		if err != nil {
			return msgs, pos, fmt.Errorf("%w: %s at %d: %v", ErrNotNATS, op, pos, err)
		}
		if len(b)-body < total+2 {
			return msgs, pos, nil // cut off
		}
		if !bytes.Equal(b[body+total:body+total+2], []byte("\r\n")) {
			return msgs, pos, fmt.Errorf("%w: %s at %d: the payload does not end with CRLF", ErrNotNATS, op, pos)
		}
		m.Op = op
		if op == "HPUB" || op == "HMSG" {
			m.Header = bytes.Clone(b[body : body+hdr])
		}
		m.Payload = bytes.Clone(b[body+hdr : body+total])
		m.Start, m.End = pos, body+total+2
		msgs = append(msgs, m)
		pos = m.End
	}
	return msgs, pos, nil
}

// frameArgs reads f = op subject [sid] [reply] sizes...: skip is 1 for
// PUB/HPUB (no sid) and 2 for MSG/HMSG.
func frameArgs(m *NATSMsg, f []string, skip int, sizes ...*int) error {
	args := f[1:]
	n := len(sizes) + skip
	switch len(args) {
	case n:
	case n + 1:
		m.Reply = args[skip]
	default:
		return fmt.Errorf("%d arguments", len(args))
	}
	m.Subject = args[0]
	for i, p := range sizes {
		v, err := strconv.Atoi(args[len(args)-len(sizes)+i])
		if err != nil || v < 0 || v > 64<<20 {
			return fmt.Errorf("size %q", args[len(args)-len(sizes)+i])
		}
		*p = v
	}
	return nil
}

// Encode returns the frame in the protocol's text form (with a sid of 1
// for MSG and HMSG).
func (f NATSMsg) Encode() []byte {
	var b bytes.Buffer
	b.WriteString(f.Op)
	b.WriteString(" " + f.Subject)
	if f.Op == "MSG" || f.Op == "HMSG" {
		b.WriteString(" 1")
	}
	if f.Reply != "" {
		b.WriteString(" " + f.Reply)
	}
	if f.Op == "HPUB" || f.Op == "HMSG" {
		b.WriteString(" " + strconv.Itoa(len(f.Header)))
	}
	b.WriteString(" " + strconv.Itoa(len(f.Header)+len(f.Payload)) + "\r\n")
	b.Write(f.Header)
	b.Write(f.Payload)
	b.WriteString("\r\n")
	return b.Bytes()
}
