package netlab

import (
	"encoding/binary"
	"fmt"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// ipctnlMsgCtDelete is ctnetlink's delete message (linux/netfilter/
// nfnetlink_conntrack.h); without attributes it deletes every entry.
const ipctnlMsgCtDelete = 2

// FlushConntrack makes the namespace forget every flow it tracks
// (ctnetlink's flush, as "conntrack -F" does), so that the next packet of
// each flow is translated by the rules in force, as after a router's
// restart.
func (n *Namespace) FlushConntrack() {
	n.lab.t.Helper()
	if err := n.Do(flushConntrack); err != nil {
		n.lab.t.Fatalf("netlab: flushing conntrack in %s: %v", n.Name, err)
	}
}

// Conntrack returns the flows the namespace tracks, one line each, as
// /proc/net/nf_conntrack lists them (for a test's log).
func (n *Namespace) Conntrack() string {
	var b []byte
	n.Do(func() (err error) {
		// /proc/net is the reading thread's network namespace.
		b, err = os.ReadFile("/proc/thread-self/net/nf_conntrack")
		return err
	})
	return strings.TrimSpace(string(b))
}

func flushConntrack() error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	// nlmsghdr, then nfgenmsg: family, version, resource id (big-endian).
	msg := make([]byte, unix.SizeofNlMsghdr+4)
	binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:], unix.NFNL_SUBSYS_CTNETLINK<<8|ipctnlMsgCtDelete)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(msg[8:], 1) // sequence
	msg[16] = unix.AF_INET
	msg[17] = unix.NFNETLINK_V0
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 4096)
	nr, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return err
	}
	if nr < unix.SizeofNlMsghdr+4 || binary.NativeEndian.Uint16(buf[4:]) != unix.NLMSG_ERROR {
		return fmt.Errorf("unexpected netlink answer (%d bytes)", nr)
	}
	if code := int32(binary.NativeEndian.Uint32(buf[unix.SizeofNlMsghdr:])); code != 0 {
		return syscall.Errno(-code)
	}
	return nil
}
