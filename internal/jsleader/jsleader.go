// Package jsleader reads the last message of a subject from a JetStream
// stream's leader ($JS.API.STREAM.MSG.GET), never from a replica that may
// lag behind an acknowledged write. The JetStream stores (handles/jsstore,
// sigchain/jsstore) read with it, so a read after a write sees the write
// on any replica of the server.
//
//	g := jsleader.NewGetter(js, "KV_kez_handles")
//	m, err := g.Last(ctx, "$KV.kez_handles.n.alice")  // nil, nil: no such message
//
// A Getter is one request-reply on the connection per read, with no
// subscription of its own.
package jsleader

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultTimeout bounds a read whose context has no deadline when js has
// no default timeout of its own.
const DefaultTimeout = 5 * time.Second

// API returns the JetStream API subject prefix js uses ("$JS.API.",
// "$JS.<domain>.API." or its custom API prefix, ending in ".") and the
// timeout of its requests (js's default, else [DefaultTimeout]).
func API(js jetstream.JetStream) (prefix string, timeout time.Duration) {
	o := js.Options()
	prefix = "$JS.API."
	switch {
	case o.Domain != "":
		prefix = "$JS." + o.Domain + ".API."
	case o.APIPrefix != "":
		prefix = strings.TrimSuffix(o.APIPrefix, ".") + "."
	}
	timeout = o.DefaultTimeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	return prefix, timeout
}

// Msg is one stored message, as the stream leader returned it.
type Msg struct {
	Subject string
	Seq     uint64
	Header  []byte // NATS header block as stored (nats.DecodeHeadersMsg reads it); nil without headers
	Data    []byte
	Time    time.Time // when the server stored it
}

// Getter reads from one stream's leader. It is safe for concurrent use.
type Getter struct {
	nc      *nats.Conn
	subject string
	timeout time.Duration
}

// NewGetter returns a Getter for stream over js's connection.
func NewGetter(js jetstream.JetStream, stream string) *Getter {
	api, timeout := API(js)
	return &Getter{nc: js.Conn(), subject: api + "STREAM.MSG.GET." + stream, timeout: timeout}
}

// response is the JetStream API's answer to a message get.
type response struct {
	Error *struct {
		Code        int    `json:"code"`
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
	Message *struct {
		Subject string    `json:"subject"`
		Seq     uint64    `json:"seq"`
		Header  []byte    `json:"hdrs"`
		Data    []byte    `json:"data"`
		Time    time.Time `json:"time"`
	} `json:"message"`
}

// errCodeNoMessage is JetStream's "no message found" (JSNoMessageFoundErr).
const errCodeNoMessage = 10037

// Last returns the last message on subject (a filter may have wildcards),
// or nil and no error if there is none. Without a deadline on ctx the read
// is bounded by the connection's JetStream timeout.
func (g *Getter) Last(ctx context.Context, subject string) (*Msg, error) {
	req, _ := json.Marshal(map[string]string{"last_by_subj": subject})
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, g.timeout)
		defer cancel()
	}
	reply, err := g.nc.RequestWithContext(ctx, g.subject, req)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", subject, err)
	}
	var resp response
	if err := json.Unmarshal(reply.Data, &resp); err != nil {
		return nil, fmt.Errorf("reading %s: the JetStream answer is not JSON: %w", subject, err)
	}
	if resp.Error != nil {
		if resp.Error.ErrCode == errCodeNoMessage {
			return nil, nil
		}
		return nil, fmt.Errorf("reading %s: JetStream error %d: %s", subject, resp.Error.ErrCode, resp.Error.Description)
	}
	m := resp.Message
	if m == nil {
		return nil, fmt.Errorf("reading %s: JetStream answered without a message", subject)
	}
	return &Msg{Subject: m.Subject, Seq: m.Seq, Header: m.Header, Data: m.Data, Time: m.Time}, nil
}

// kvOperation is the header in which a JetStream KV bucket marks deletes
// and purges.
const kvOperation = "KV-Operation"

// KVRemoved reports whether m, read from a KV bucket's stream, is the
// marker of a deleted or purged key rather than a value.
func (m *Msg) KVRemoved() (bool, error) {
	if len(m.Header) == 0 || !bytes.Contains(m.Header, []byte(kvOperation)) {
		return false, nil
	}
	h, err := nats.DecodeHeadersMsg(m.Header)
	if err != nil {
		return false, fmt.Errorf("reading %s: bad headers: %w", m.Subject, err)
	}
	op := h.Get(kvOperation)
	return op == "DEL" || op == "PURGE", nil
}
