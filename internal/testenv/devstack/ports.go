package devstack

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
)

// PortsFile, inside Config.Dir, records the stack's loopback ports; a
// later Start in the same folder listens on them again.
const PortsFile = "ports.json"

// maxPortsFile bounds what readPorts reads: the file is a few lines.
const maxPortsFile = 4 << 10

// ports are the loopback ports of a stack, as PortsFile keeps them. Zero
// means not chosen yet.
type ports struct {
	NATS        int `json:"nats"`
	NATSMonitor int `json:"nats_monitor"`
	SigServer   int `json:"sig_server"`
	ChatServer  int `json:"chat_server"`
}

// each lists the ports with the names people know the servers by.
func (p *ports) each() []struct {
	service string
	port    *int
} {
	return []struct {
		service string
		port    *int
	}{
		{"NATS", &p.NATS},
		{"NATS monitoring", &p.NATSMonitor},
		{"sig-server", &p.SigServer},
		{"chat-server", &p.ChatServer},
	}
}

// PortError is returned by Start when a port kept in [PortsFile] from an
// earlier run of the same folder cannot be listened on again, most often
// because another program now holds it.
type PortError struct {
	Service string // "NATS", "NATS monitoring", "sig-server" or "chat-server"
	Port    int
	Err     error // why listening failed
}

func (e *PortError) Error() string {
	return fmt.Sprintf("devstack: the %s port %d is taken: %v", e.Service, e.Port, e.Err)
}

func (e *PortError) Unwrap() error { return e.Err }

// ErrBadPorts: PortsFile does not hold four distinct TCP ports.
var ErrBadPorts = errors.New("devstack: malformed ports file")

// parsePorts reads what PortsFile holds: the four ports, each zero or a
// TCP port, the non-zero ones distinct.
func parsePorts(b []byte) (ports, error) {
	var p ports
	if len(b) > maxPortsFile {
		return ports{}, fmt.Errorf("%w: %d bytes", ErrBadPorts, len(b))
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return ports{}, fmt.Errorf("%w: %w", ErrBadPorts, err)
	}
	seen := map[int]string{}
	for _, e := range p.each() {
		n := *e.port
		if n == 0 {
			continue
		}
		if n < 1 || n > 65535 {
			return ports{}, fmt.Errorf("%w: %s port %d", ErrBadPorts, e.service, n)
		}
		if other, dup := seen[n]; dup {
			return ports{}, fmt.Errorf("%w: %s and %s both on port %d", ErrBadPorts, other, e.service, n)
		}
		seen[n] = e.service
	}
	return p, nil
}

// readPorts returns the ports kept in dir, or zero ports if there are
// none yet.
func readPorts(dir string) (ports, error) {
	path := filepath.Join(dir, PortsFile)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return ports{}, nil
	}
	if err != nil {
		return ports{}, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPortsFile+1))
	if err != nil {
		return ports{}, err
	}
	p, err := parsePorts(b)
	if err != nil {
		return ports{}, fmt.Errorf("%w (in %s)", err, path)
	}
	return p, nil
}

// writePorts keeps p in dir.
func writePorts(dir string, p ports) error {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, PortsFile), append(b, '\n'), 0o600)
}

// checkFree returns a *PortError for the first kept port that cannot be
// listened on now, so Start says so before starting anything.
func (p *ports) checkFree() error {
	for _, e := range p.each() {
		if *e.port == 0 {
			continue
		}
		ln, err := net.Listen("tcp", loopback(*e.port))
		if err != nil {
			return &PortError{Service: e.service, Port: *e.port, Err: err}
		}
		ln.Close()
	}
	return nil
}

// pick chooses free ports for the zero ones among want, which a server
// running as a process needs before it starts.
func pick(want ...*int) error {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for _, port := range want {
		if *port != 0 {
			continue
		}
		ln, err := net.Listen("tcp", loopback(0))
		if err != nil {
			return fmt.Errorf("devstack: finding a free port: %w", err)
		}
		lns = append(lns, ln)
		*port = ln.Addr().(*net.TCPAddr).Port
	}
	return nil
}

// listen listens on a loopback port: the kept one, or any free one when
// *port is zero, which it then sets.
func listen(service string, port *int) (net.Listener, error) {
	ln, err := net.Listen("tcp", loopback(*port))
	if err != nil {
		if *port != 0 {
			return nil, &PortError{Service: service, Port: *port, Err: err}
		}
		return nil, fmt.Errorf("devstack: listening for the %s: %w", service, err)
	}
	*port = ln.Addr().(*net.TCPAddr).Port
	return ln, nil
}

func loopback(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }
