package translog

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"
)

// Pins persists what a client learned of logs: each sig-server's log
// (origin and note key, trusted on first use) and the newest checkpoint it
// accepted per origin. Implementations are safe for concurrent use.
type Pins interface {
	// LogOf returns the log pinned for the sig-server at base URL server.
	LogOf(ctx context.Context, server string) (LogInfo, bool, error)
	// SetLogOf pins the log of server.
	SetLogOf(ctx context.Context, server string, li LogInfo) error
	// Latest returns the newest accepted checkpoint (a signed note) of the
	// log origin.
	Latest(ctx context.Context, origin string) ([]byte, bool, error)
	// SetLatest records note as the newest accepted checkpoint of origin.
	SetLatest(ctx context.Context, origin string, note []byte) error
}

// Monitor checks the log proofs of chain heads a client fetches and the
// consistency of every checkpoint it sees (docs/spec/translog.md, "Client
// rules"). A Monitor is safe for concurrent use; its fields must not change
// once it is in use.
type Monitor struct {
	// Pins stores pinned logs and accepted checkpoints; nil: in memory.
	Pins Pins
	// HTTPClient fetches /v1/info and consistency proofs; nil: a default
	// client with a timeout.
	HTTPClient *http.Client
	// RequireLog refuses chain heads of servers that keep no log. By
	// default a server that has never named a log is trusted on first use,
	// as without a log.
	RequireLog bool
	// Clock is the time source; nil: time.Now.
	Clock func() time.Time
	// Logger receives warnings; nil: slog.Default().
	Logger *slog.Logger
}

var errTODO = errors.New("translog: not implemented yet")

// CheckHead checks that e, the entry of a chain's head fetched from the
// sig-server at base URL server, is in that server's log, by the proof p
// the chain GET carried (nil when it carried none).
func (m *Monitor) CheckHead(ctx context.Context, server string, e Entry, p *HeadProof) error {
	return errTODO
}

// Witness checks a checkpoint of server's log seen elsewhere (a peer's
// message) against the newest one accepted. A server whose log is not
// pinned is ignored.
func (m *Monitor) Witness(ctx context.Context, server string, note []byte) error {
	return errTODO
}

// Latest returns the newest accepted checkpoint of server's log, nil if
// none.
func (m *Monitor) Latest(ctx context.Context, server string) ([]byte, error) {
	return nil, errTODO
}

// NewMemPins returns Pins kept in memory, for tests and embedders.
func NewMemPins() Pins { return nil }
