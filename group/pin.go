package group

import (
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/ipfs/go-cid"
)

// Pin is a remembered group head: what a client keeps to notice a later
// fork or rollback ([State.CheckPin]). Its JSON form is
// {"group":"name@domain","id":"<64 hex>","seqno":N,"head":"b…"}.
type Pin struct {
	Group string   // the group's address
	ID    [32]byte // the group ID
	Seqno uint64   // the head's seqno
	Head  cid.Cid  // the head's link ID
}

type pinJSON struct {
	Group string `json:"group"`
	ID    string `json:"id"`
	Seqno uint64 `json:"seqno"`
	Head  string `json:"head"`
}

// MarshalJSON implements json.Marshaler.
func (p Pin) MarshalJSON() ([]byte, error) {
	return json.Marshal(pinJSON{p.Group, hex.EncodeToString(p.ID[:]), p.Seqno, p.Head.String()})
}

// UnmarshalJSON implements json.Unmarshaler.
func (p *Pin) UnmarshalJSON(b []byte) error {
	var j pinJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	var id [32]byte
	if n, err := hex.Decode(id[:], []byte(j.ID)); err != nil || n != 32 || len(j.ID) != 64 {
		return fmt.Errorf("group: pin: id is not 64 hex digits")
	}
	d, err := parseID(j.Head)
	if err != nil {
		return fmt.Errorf("group: pin: head: %w", err)
	}
	*p = Pin{Group: j.Group, ID: id, Seqno: j.Seqno, Head: cidOf(d)}
	return nil
}

// CheckPin compares s with a head seen before. It returns nil when s is
// that head or a chain that continues it; an error wrapping [ErrFork] when
// s is another group (another name or ID) or has another link at the
// pinned seqno; and one wrapping [ErrRollback] when s is shorter.
func (s *State) CheckPin(p Pin) error {
	if id := s.ID(); p.Group != s.name || p.ID != id {
		return fmt.Errorf("%w: the pin is of group %s with ID %x, the chain of %s with ID %x", ErrFork, p.Group, p.ID[:8], s.name, id[:8])
	}
	if p.Seqno == 0 {
		return fmt.Errorf("%w: the pin has seqno 0", ErrInvalid)
	}
	if p.Seqno > s.seqno {
		return fmt.Errorf("%w: the pin is at seqno %d, the chain ends at %d", ErrRollback, p.Seqno, s.seqno)
	}
	if d, ok := digestOf(p.Head); !ok || d != s.ids[p.Seqno-1] {
		return fmt.Errorf("%w: link %d is %s, the pin says %s", ErrFork, p.Seqno, cidOf(s.ids[p.Seqno-1]), p.Head)
	}
	return nil
}
