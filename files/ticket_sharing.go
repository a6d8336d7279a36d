package files

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/files/format"
	"github.com/kez-lat/kez-chat/files/internal/addrs"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/libp2p/go-libp2p/core/event"
	ma "github.com/multiformats/go-multiaddr"
)

// Files in the state folder (client.Config.Home) about the node
// (docs/spec/ticket.md §6).
const (
	// AddrsFile holds the addresses of the last node that served from
	// this state folder, one multiaddr a line.
	AddrsFile = "p2p-addrs"
	// ListenFile holds the addresses that node listened on, whose ports
	// the next serving node takes again.
	ListenFile = "p2p-listen"
)

// portTakenText is logged when a recorded listen port is taken.
const portTakenText = "files: a listen port used last time is taken, so the node listens on a new one; tickets made before name the old port"

// maxAddrsFileSize bounds what is read of AddrsFile and ListenFile.
const maxAddrsFileSize = 64 << 10

// ErrNoAddresses reports a ticket that would name no address: this
// install has not served yet and knows no relay.
var ErrNoAddresses = errors.New("files: no address to put in a ticket; serve first")

// Ticket makes a ticket (docs/spec/ticket.md) for the entry of the user's
// current manifest named nameOrCID (a name, or a CID in any text form),
// valid for ttl (0: [DefaultTicketTTL]; at most [MaxTicketTTL]). The
// addresses are the serving node's if this Sharing serves, else those a
// serving process of the same Home last recorded, else circuit addresses
// through the client's relays. A private entry's ticket names no file:
// only its recipients learn the name and key, from the manifest.
//
// Errors: [ErrNotPrimary] on a linked device, [ErrNoSigServer], a
// *[NotSharedError], ErrForbidden with [ErrSharedWithGroup] for an entry
// shared with a group (its members get its key in the group),
// [ErrNoAddresses], a ttl out of range wrapping [ErrTicketMalformed], and
// the sig-server's.
func (s *Sharing) Ticket(ctx context.Context, nameOrCID string, ttl time.Duration) (string, error) {
	if !s.work.Enter() {
		return "", ErrClosed
	}
	defer s.work.Leave()
	switch {
	case s.primary == nil:
		return "", ErrNotPrimary
	case s.sigc == nil:
		return "", ErrNoSigServer
	case ttl < 0 || ttl > MaxTicketTTL:
		return "", fmt.Errorf("%w: a ticket lives at most %d days, not %s", ErrTicketMalformed, MaxTicketTTL/(24*time.Hour), ttl)
	case ttl == 0:
		ttl = DefaultTicketTTL
	}
	own, err := s.ownChain(ctx)
	if err != nil {
		return "", err
	}
	m := &format.Manifest{}
	if body := own.SharedFiles(); body != nil {
		if m, err = format.DecodeManifest(body); err != nil {
			return "", fmt.Errorf("files: your list of shared files cannot be read by this version: %w", err)
		}
	}
	e, err := findEntry("", m, format.Visible(m, s.primary), nameOrCID)
	if err != nil {
		return "", err
	}
	dev := e.Device
	if dev.IsZero() {
		dev = s.me
	}
	addrs, err := s.ticketAddrs(dev)
	if err != nil {
		return "", err
	}
	t := &Ticket{Private: e.Private, Owner: s.me, Device: dev, CID: e.CID, Size: e.Size, Expires: s.now().Add(ttl).Truncate(time.Second),
		Name: e.Name, SigServer: s.sigc.BaseURL, Addrs: addrs}
	if e.Private {
		t.Size, t.Name = format.EncryptedSize(e.Size), ""
	}
	return SignTicket(s.primary, t)
}

// ticketAddrs returns the addresses a ticket for device dev names.
func (s *Sharing) ticketAddrs(dev kez.PublicKey) ([]ma.Multiaddr, error) {
	var as []ma.Multiaddr
	if dev == s.devKey {
		s.mu.Lock()
		if s.node != nil && s.serving.Load() {
			as = s.node.Addrs()
		}
		s.mu.Unlock()
		if len(as) == 0 {
			var err error
			if as, err = readAddrsFile(filepath.Join(s.cfg.Client.Home, AddrsFile)); err != nil {
				s.log.Warn("files: reading the recorded serving addresses", "err", err)
			}
		}
	}
	as = addrs.Order(as)
	if len(as) == 0 {
		as = relayCircuits(s.cfg.Client.Relays)
	}
	if len(as) == 0 {
		return nil, ErrNoAddresses
	}
	return as, nil
}

// relayCircuits are circuit addresses through each relay (a multiaddr
// ending in /p2p/<relay>), at most MaxTicketAddrs.
func relayCircuits(relays []string) []ma.Multiaddr {
	var out []ma.Multiaddr
	for _, r := range relays {
		if r == client.NoRelays {
			continue
		}
		a, err := ma.NewMultiaddr(r + "/p2p-circuit")
		if err == nil && checkTicketAddr(a.Bytes()) == nil && len(out) < MaxTicketAddrs {
			out = append(out, a)
		}
	}
	return out
}

// readAddrsFile reads a file of multiaddrs, one a line, skipping lines
// that do not parse. A missing file is no address and no error.
func readAddrsFile(path string) ([]ma.Multiaddr, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []ma.Multiaddr
	sc := bufio.NewScanner(&limitedFile{f: f, left: maxAddrsFileSize})
	for sc.Scan() {
		if a, err := ma.NewMultiaddr(strings.TrimSpace(sc.Text())); err == nil {
			out = append(out, a)
		}
	}
	return out, sc.Err()
}

// limitedFile reads at most left bytes of f.
type limitedFile struct {
	f    *os.File
	left int
}

func (l *limitedFile) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, errors.New("files: the file is too large")
	}
	p = p[:min(len(p), l.left)]
	n, err := l.f.Read(p)
	l.left -= n
	return n, err
}

// writeAddrsFile replaces path with as, one a line: a temporary file,
// mode 0600, renamed over it.
func writeAddrsFile(path string, as []ma.Multiaddr) error {
	var b bytes.Buffer
	for _, a := range as {
		b.WriteString(a.String())
		b.WriteByte('\n')
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(b.Bytes())
	err = errors.Join(err, tmp.Chmod(0o600), tmp.Close())
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}

// recordServing writes the node's addresses and listen addresses in the
// Home (AddrsFile, ListenFile), and keeps AddrsFile up to date (its own
// addresses and its circuit addresses) while the node lives and this
// Sharing serves.
func (s *Sharing) recordServing(n *Node) {
	home := s.cfg.Client.Home
	s.writeAddrs(n)
	if err := writeAddrsFile(filepath.Join(home, ListenFile), n.host.Network().ListenAddresses()); err != nil {
		s.log.Warn("files: recording the listen addresses", "err", err)
	}
	if !n.watching.CompareAndSwap(false, true) {
		return
	}
	sub, err := n.host.EventBus().Subscribe(new(event.EvtLocalAddressesUpdated))
	if err != nil {
		s.log.Warn("files: watching the node's addresses", "err", err)
		return
	}
	go func() {
		defer sub.Close()
		// The circuit addresses change with the node's own reservations,
		// of which libp2p's address events say nothing.
		_, relays := n.RelayAddrs()
		if s.serving.Load() {
			s.writeAddrs(n) // the reservations may have changed since
		}
		for {
			select {
			case <-n.ctx.Done():
				return
			case _, ok := <-sub.Out():
				if !ok {
					return
				}
			case <-relays:
				_, relays = n.RelayAddrs()
			}
			if s.serving.Load() {
				s.writeAddrs(n)
			}
		}
	}()
}

func (s *Sharing) writeAddrs(n *Node) {
	if err := writeAddrsFile(filepath.Join(s.cfg.Client.Home, AddrsFile), addrs.Order(n.Addrs())); err != nil {
		s.log.Warn("files: recording the serving addresses", "err", err)
	}
}

// stableListen returns listen with each address of port 0 given the port
// that the address had in ListenFile, and which addresses it changed.
func stableListen(home string, listen []string) (out []string, reused map[string]string) {
	recorded, _ := readAddrsFile(filepath.Join(home, ListenFile))
	reused = map[string]string{}
	for _, l := range listen {
		out = append(out, l)
		a, err := ma.NewMultiaddr(l)
		if err != nil || !hasPortZero(a) {
			continue
		}
		for _, r := range recorded {
			if withoutPorts(r).Equal(a) && !hasPortZero(r) {
				out[len(out)-1] = r.String()
				reused[r.String()] = l
				break
			}
		}
	}
	return out, reused
}

// hasPortZero reports whether a has a TCP or UDP port 0.
func hasPortZero(a ma.Multiaddr) bool {
	for _, c := range a {
		if (c.Code() == ma.P_TCP || c.Code() == ma.P_UDP) && c.Value() == "0" {
			return true
		}
	}
	return false
}

// withoutPorts returns a with its TCP and UDP ports 0.
func withoutPorts(a ma.Multiaddr) ma.Multiaddr {
	out := make(ma.Multiaddr, 0, len(a))
	for _, c := range a {
		if c.Code() == ma.P_TCP || c.Code() == ma.P_UDP {
			if z, err := ma.NewComponent(c.Protocol().Name, "0"); err == nil {
				c = *z
			}
		}
		out = append(out, c)
	}
	return out
}

// listenAgain makes n listen on a new port for each address of reused
// (recorded port → the configured address of port 0) it does not listen
// on, the recorded port being taken, and says so in the log.
func listenAgain(n *Node, reused map[string]string, log interface {
	Warn(string, ...any)
}) {
	listening := n.host.Network().ListenAddresses()
	for rec, orig := range reused {
		r, _ := ma.NewMultiaddr(rec)
		if slices.ContainsFunc(listening, func(l ma.Multiaddr) bool { return l.Equal(r) }) {
			continue
		}
		a, _ := ma.NewMultiaddr(orig)
		err := n.host.Network().Listen(a)
		log.Warn(portTakenText, "was", rec, "err", err)
	}
}

// newServingNode starts the Sharing's node with cfg; to serve, on the
// listen ports recorded in the Home where they are free.
func (s *Sharing) newServingNode(cfg NodeConfig, serve bool) (*Node, error) {
	if !serve {
		return NewNode(cfg)
	}
	orig := cfg.ListenAddrs
	if len(orig) == 0 {
		orig = defaultListenAddrs
	}
	listen, reused := stableListen(s.cfg.Client.Home, orig)
	if len(reused) == 0 {
		return NewNode(cfg)
	}
	cfg.ListenAddrs = listen
	n, err := NewNode(cfg)
	if err != nil {
		// Every recorded port is taken.
		s.log.Warn(portTakenText, "was", listen, "err", err)
		cfg.ListenAddrs = orig
		return NewNode(cfg)
	}
	listenAgain(n, reused, s.log)
	return n, nil
}
