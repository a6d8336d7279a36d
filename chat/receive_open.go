package chat

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/nats.go/jetstream"
)

// isRefusal reports an error that refuses a delivery (wrapping one of the
// envelope errors), as opposed to a failure of the database.
func isRefusal(err error) bool {
	for _, s := range refusals {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

var refusals = []error{ErrMalformed, ErrUnsupportedVersion, ErrUnsupportedSuite, ErrNotForMe, ErrWrongRecipient, ErrDecrypt,
	ErrBadSignature, ErrSenderMismatch, ErrTooLarge, ErrDowngrade, ErrUnknownSession, ErrReplay,
	ErrDeviceRevoked, ErrUnknownDevice, ErrDeviceAmbiguous, ErrNotOwnDevice, ErrKeyMismatch,
	ErrUnknownGroup, ErrNotGroupMember, ErrStaleEpoch, ErrGroupBroken}

// opened is the outcome of opening one delivery.
type opened struct {
	from kez.PublicKey // the subject's sender
	m    *Message
	v2   bool // a session envelope: opened later, in the transaction
	v3   bool // a group envelope: likewise
	err  error
}

// openAll opens a batch of format v1 deliveries, expecting each subject's
// sender token as the sender, on up to GOMAXPROCS goroutines: opening (one
// X25519 and one ed25519 verification each) is most of the cost of
// receiving v1. Session (v2) envelopes are only marked.
func (c *Client) openAll(msgs []jetstream.Msg) []opened {
	out := make([]opened, len(msgs))
	o := c.opener.Load()
	one := func(i int) {
		from, err := c.senderOf(msgs[i].Subject())
		out[i].from = from
		if err == nil {
			if data := msgs[i].Data(); envelopeVersionOf(data) == envelopeV2 {
				out[i].v2 = true
			} else if envelopeVersionOf(data) == envelopeV3 {
				out[i].v3 = true
			} else if o == nil {
				err = fmt.Errorf("%w: a format 1 envelope to a device that is not its person's primary one", ErrNotForMe)
			} else {
				out[i].m, err = o.Open(data, from)
			}
		}
		out[i].err = err
	}
	workers := min(runtime.GOMAXPROCS(0), len(msgs)/minPerWorker)
	if workers <= 1 {
		for i := range msgs {
			one(i)
		}
		return out
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < len(msgs); i = int(next.Add(1) - 1) {
				one(i)
			}
		})
	}
	wg.Wait()
	return out
}

// minPerWorker is the smallest share of a batch worth another goroutine.
const minPerWorker = 4

// senderOf returns the sender token of an inbox subject addressed to this
// device: kez.v1.inbox.<device>.<sending device>.
func (c *Client) senderOf(subject string) (kez.PublicKey, error) {
	rest, ok := strings.CutPrefix(subject, inboxPrefix+c.devKey.String()+".")
	if !ok || strings.Contains(rest, ".") {
		return kez.PublicKey{}, fmt.Errorf("%w: subject %q is not an inbox subject of this user", ErrMalformed, subject)
	}
	k, err := kez.ParsePublicKey(rest)
	if err != nil {
		return kez.PublicKey{}, fmt.Errorf("%w: the sender token of subject %q is not a key", ErrMalformed, subject)
	}
	return k, nil
}

// reject drops a delivery that did not open: it is logged and terminated,
// so the server does not deliver it again, and nothing is stored or shown.
func (c *Client) reject(jm jetstream.Msg, err error) {
	c.stats.rejected.Add(1)
	c.log.Warn("rejected a message that failed verification", "subject", jm.Subject(), "err", err)
	if terr := jm.TermWithReason("rejected by the recipient: " + firstLine(err.Error())); terr != nil {
		c.log.Debug("terminating a delivery", "err", terr)
	}
}

func firstLine(s string) string {
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}
