package translog

import (
	"fmt"

	"golang.org/x/mod/sumdb/note"
)

// HeadProof is what a chain GET carries in its "log" object: a checkpoint
// and the inclusion proof of the entry of the chain's head.
type HeadProof struct {
	// Checkpoint is the signed note (C2SP tlog-checkpoint).
	Checkpoint string `json:"checkpoint"`
	// Index is the leaf index of the head's entry.
	Index uint64 `json:"index"`
	// Proof is the inclusion proof, hashes in standard base64.
	Proof []string `json:"proof"`
}

// Info is the sig-server's GET /v1/info.
type Info struct {
	// Log describes the server's log; nil when the server keeps none.
	Log *LogInfo `json:"log"`
}

// LogInfo names a log: its origin and its note verifier key.
type LogInfo struct {
	// Origin is the log's origin, the first line of its checkpoints and the
	// name of its note key.
	Origin string `json:"origin"`
	// Key is the note verifier key text ("origin+hash+base64key").
	Key string `json:"key"`
}

// Check reports whether li is a log a client may pin: Key is a note
// verifier key whose name is Origin, and Origin is visible ASCII (it is
// printed to people, so it may carry no control or look-alike
// characters).
func (li LogInfo) Check() error {
	v, err := note.NewVerifier(li.Key)
	if err != nil || v.Name() != li.Origin {
		return fmt.Errorf("%w: the log key %q is not a note key named %q", ErrBadCheckpoint, li.Key, li.Origin)
	}
	for i := 0; i < len(li.Origin); i++ {
		if c := li.Origin[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("%w: the log origin %+q is not visible ASCII", ErrBadCheckpoint, li.Origin)
		}
	}
	return nil
}

// ConsistencyProof is the sig-server's GET /v1/log/consistency answer.
type ConsistencyProof struct {
	From  uint64   `json:"from"`  // the older tree size
	To    uint64   `json:"to"`    // the newer tree size
	Proof []string `json:"proof"` // hashes in standard base64
}
