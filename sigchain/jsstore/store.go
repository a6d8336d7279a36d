package jsstore

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/internal/jsleader"
	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/multiformats/go-multihash"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	// DefaultStream is the stream New uses unless [WithStream] says
	// otherwise.
	DefaultStream = "KEZ_SIGCHAINS"
	// DefaultSubjectPrefix is the subject prefix New uses unless
	// [WithSubjectPrefix] says otherwise.
	DefaultSubjectPrefix = wire.ChainSubjectPrefix
	// DefaultPrekeyBucket is the KV bucket of the prekey directory New
	// uses unless [WithPrekeyBucket] says otherwise.
	DefaultPrekeyBucket = "KEZ_PREKEYS"
	// DefaultLinkRequestBucket is the KV bucket of pending device link
	// requests New uses unless [WithLinkRequestBucket] says otherwise.
	DefaultLinkRequestBucket = "KEZ_LINK_REQUESTS"
)

// parallelReads bounds the link reads Links has in flight at once.
const parallelReads = 16

// Option configures [New].
type Option func(*config)

type config struct {
	stream, prefix, prekeys, links string
	replicas                       int
}

// WithStream sets the stream's name (default [DefaultStream]).
func WithStream(name string) Option { return func(c *config) { c.stream = name } }

// WithSubjectPrefix sets the subject prefix (default
// [DefaultSubjectPrefix]); links go to <prefix>.<key>.<seqno>. Two stores
// in one NATS account need two prefixes and two streams.
func WithSubjectPrefix(p string) Option { return func(c *config) { c.prefix = p } }

// WithPrekeyBucket sets the KV bucket of the prekey directory (default
// [DefaultPrekeyBucket]). Two stores in one NATS account need two
// buckets.
func WithPrekeyBucket(name string) Option { return func(c *config) { c.prekeys = name } }

// WithLinkRequestBucket sets the KV bucket of pending device link
// requests (default [DefaultLinkRequestBucket]). Two stores in one NATS
// account need two buckets.
func WithLinkRequestBucket(name string) Option { return func(c *config) { c.links = name } }

// WithReplicas sets how many JetStream servers keep a copy of the stream
// when New creates it: 1 (the default) on a single server, 3 on a cluster
// so it survives the loss of one node. An existing stream keeps its own
// setting.
func WithReplicas(n int) Option { return func(c *config) { c.replicas = n } }

// Store is a [sigchain.Store] in a JetStream stream. It is safe for
// concurrent use, also by many processes sharing the stream.
type Store struct {
	js        jetstream.JetStream
	st        jetstream.Stream
	denyPurge bool // a stream made by an earlier version: no collection
	nc        *nats.Conn
	stream    string
	prefix    string           // "<prefix>."
	leader    *jsleader.Getter // reads of the stream leader
	directGet string           // any replica's direct get
	batches   *batches
	timeout   time.Duration

	prekeys       jetstream.KeyValue
	prekeyLeader  *jsleader.Getter // reads of the prekey bucket's stream leader
	prekeySubject string           // "$KV.<bucket>."

	linkRequests       jetstream.KeyValue
	linkLeader         *jsleader.Getter // reads of the link request bucket's stream leader
	linkRequestSubject string           // "$KV.<bucket>."
}

var (
	_ sigchain.OrphanCollector  = (*Store)(nil)
	_ sigchain.PrekeyStore      = (*Store)(nil)
	_ sigchain.DeviceStore      = (*Store)(nil)
	_ sigchain.LinkRequestStore = (*Store)(nil)
)

// New opens the chain store in the stream of js's account, creating the
// stream if it does not exist. js must come from a connection allowed to
// use the JetStream API for that stream and to publish on its subjects;
// the Store does not close it. The Store keeps one subscription on the
// connection's inbox prefix for its batch reads; it ends with the
// connection.
func New(ctx context.Context, js jetstream.JetStream, opts ...Option) (*Store, error) {
	cfg := config{stream: DefaultStream, prefix: DefaultSubjectPrefix, prekeys: DefaultPrekeyBucket, links: DefaultLinkRequestBucket, replicas: 1}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.replicas < 1 || cfg.replicas > 5 {
		return nil, fmt.Errorf("jsstore: %d replicas; JetStream keeps 1 to 5", cfg.replicas)
	}
	if !validPrefix(cfg.prefix) {
		return nil, fmt.Errorf("jsstore: the subject prefix %q is not dot-separated tokens without wildcards or spaces", cfg.prefix)
	}
	filter := cfg.prefix + ".>"
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:        cfg.stream,
		Description: "KEZ chat sigchains: " + cfg.prefix + ".<key>.<seqno>, one link a message, append-only; " + cfg.prefix + ".<key> marks an orphan chain; " + cfg.prefix + ".devices.<key> indexes a device; " + cfg.prefix + ".groups.<name>.<seqno> holds a group's link",
		Subjects:    []string{filter},
		Retention:   jetstream.LimitsPolicy,
		MaxMsgs:     -1,
		MaxBytes:    -1,
		MaxMsgSize:  sigchain.MaxLinkSize,
		Discard:     jetstream.DiscardNew,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.replicas,
		DenyDelete:  true,
		AllowDirect: true, // for Links; see there
		// For appends that add or revoke a device: the link and the
		// device's index entry in one batch.
		AllowAtomicPublish: true,
	})
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		st, err = js.Stream(ctx, cfg.stream)
	}
	if err != nil {
		return nil, fmt.Errorf("jsstore: opening the stream %s: %w", cfg.stream, err)
	}
	if subj := st.CachedInfo().Config.Subjects; !slices.Contains(subj, filter) {
		return nil, fmt.Errorf("jsstore: the stream %s exists but takes %q, not %q; choose another stream name or prefix", cfg.stream, subj, filter)
	}
	if sc := st.CachedInfo().Config; !sc.AllowAtomicPublish { // made by an earlier version
		sc.AllowAtomicPublish = true
		if st, err = js.UpdateStream(ctx, sc); err != nil {
			return nil, fmt.Errorf("jsstore: allowing atomic batches on the stream %s: %w", cfg.stream, err)
		}
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:       cfg.prekeys,
		Description:  "KEZ chat prekey directory: <key> holds the key's signed prekey record",
		History:      1,
		MaxValueSize: sigchain.MaxPrekeySize,
		Storage:      jetstream.FileStorage,
		Replicas:     cfg.replicas,
	})
	if errors.Is(err, jetstream.ErrBucketExists) {
		kv, err = js.KeyValue(ctx, cfg.prekeys)
	}
	if err != nil {
		return nil, fmt.Errorf("jsstore: opening the KV bucket %s: %w", cfg.prekeys, err)
	}
	lr, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:       cfg.links,
		Description:  "KEZ chat device link requests: <code> holds a pending signed request until it expires",
		History:      1,
		TTL:          linkRequestAge,
		MaxValueSize: sigchain.MaxLinkRequestSize,
		Storage:      jetstream.FileStorage,
		Replicas:     cfg.replicas,
	})
	if errors.Is(err, jetstream.ErrBucketExists) {
		lr, err = js.KeyValue(ctx, cfg.links)
	}
	if err != nil {
		return nil, fmt.Errorf("jsstore: opening the KV bucket %s: %w", cfg.links, err)
	}
	api, timeout := jsleader.API(js)
	b, err := newBatches(js.Conn())
	if err != nil {
		return nil, fmt.Errorf("jsstore: subscribing for batch reads: %w", err)
	}
	return &Store{
		batches:   b,
		js:        js,
		st:        st,
		denyPurge: st.CachedInfo().Config.DenyPurge,
		nc:        js.Conn(),
		stream:    cfg.stream,
		prefix:    cfg.prefix + ".",
		leader:    jsleader.NewGetter(js, cfg.stream),
		directGet: api + "DIRECT.GET." + cfg.stream,
		timeout:   timeout,

		prekeys:       kv,
		prekeyLeader:  jsleader.NewGetter(js, "KV_"+cfg.prekeys),
		prekeySubject: "$KV." + cfg.prekeys + ".",

		linkRequests:       lr,
		linkLeader:         jsleader.NewGetter(js, "KV_"+cfg.links),
		linkRequestSubject: "$KV." + cfg.links + ".",
	}, nil
}

func validPrefix(p string) bool {
	if p == "" {
		return false
	}
	for tok := range strings.SplitSeq(p, ".") {
		if tok == "" || tok == "*" || tok == ">" || strings.ContainsAny(tok, " \t\r\n") {
			return false
		}
	}
	return true
}

// Ping checks that the stream has a leader that answers; use it as a
// readiness check.
func (s *Store) Ping(ctx context.Context) error {
	_, err := s.last(ctx, s.prefix+"ping")
	return err
}

func (s *Store) chainFilter(k kez.PublicKey) string { return s.prefix + k.String() + ".>" }

func (s *Store) linkSubject(k kez.PublicKey, seqno uint64) string {
	return s.prefix + k.String() + "." + strconv.FormatUint(seqno, 10)
}

// headAt returns the head of key's chain and its stream sequence, or
// sigchain.ErrNotFound (with the sequence of a collection's fence, if
// the chain is being collected, so that an append can follow it).
func (s *Store) headAt(ctx context.Context, key kez.PublicKey) (sigchain.Head, uint64, error) {
	m, err := s.last(ctx, s.chainFilter(key))
	if err != nil {
		return sigchain.Head{}, 0, err
	}
	if m == nil {
		return sigchain.Head{}, 0, sigchain.ErrNotFound
	}
	want := s.prefix + key.String() + "."
	if m.subject == want+fenceToken {
		return sigchain.Head{}, m.seq, sigchain.ErrNotFound
	}
	seqno, err := strconv.ParseUint(strings.TrimPrefix(m.subject, want), 10, 64)
	if !strings.HasPrefix(m.subject, want) || err != nil || seqno == 0 {
		return sigchain.Head{}, 0, fmt.Errorf("jsstore: the stream holds a message on %q, which is not <prefix>.<key>.<seqno>", m.subject)
	}
	return sigchain.Head{Seqno: seqno, ID: linkID(m.data)}, m.seq, nil
}

// linkID is a link's ID: CIDv1, raw codec, sha2-256 of its bytes
// (docs/spec/sigchain.md).
func linkID(b []byte) cid.Cid {
	d := sha256.Sum256(b)
	mh, err := multihash.Encode(d[:], multihash.SHA2_256)
	if err != nil {
		panic("jsstore: multihash: " + err.Error()) // unreachable: fixed size
	}
	return cid.NewCidV1(cid.Raw, mh)
}

// Head implements [sigchain.Store].
func (s *Store) Head(ctx context.Context, key kez.PublicKey) (sigchain.Head, error) {
	h, _, err := s.headAt(ctx, key)
	return h, err
}

// Links implements [sigchain.Store]. It reads the head from the stream
// leader, then the links after since up to that head (never beyond it, so
// the links and the head agree), at most limit of them; limit < 1 gives
// none. The links come in one batch from any replica (a direct get):
// a link's subject is written once, so a replica can lag but never be
// wrong, and links a lagging replica lacks are read from the leader.
func (s *Store) Links(ctx context.Context, key kez.PublicKey, since uint64, limit int) ([][]byte, sigchain.Head, error) {
	h, _, err := s.headAt(ctx, key)
	if err != nil {
		return nil, sigchain.Head{}, err
	}
	if since >= h.Seqno || limit < 1 {
		return nil, h, nil
	}
	n := int(min(h.Seqno-since, uint64(limit)))
	out, err := s.seqLinks(ctx, s.prefix+key.String()+".", key.String(), since, h.Seqno, n)
	if err != nil {
		return nil, sigchain.Head{}, err
	}
	return out, h, nil
}

// inFlightRetries bounds how often Append publishes again when a
// replicated stream refused its link because another write to the chain
// was proposed but not applied yet (the head read back is still the one
// the link follows).
const inFlightRetries = 5

// Append implements [sigchain.Store]; see the package comment.
func (s *Store) Append(ctx context.Context, link *sigchain.Link) error {
	for attempt := 1; ; attempt++ {
		err := s.appendOnce(ctx, link)
		var inFlight *inFlightError
		if !errors.As(err, &inFlight) {
			return err
		}
		if attempt == inFlightRetries {
			return &sigchain.ConflictError{Head: inFlight.head}
		}
		// The competing write is applied within a few milliseconds;
		// then the head read back tells whether it was this very link.
		select {
		case <-time.After(time.Duration(attempt) * 10 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// inFlightError is appendOnce's report of a publish refused for a write
// to the chain still in flight: the head is still the one link follows.
type inFlightError struct{ head sigchain.Head }

func (e *inFlightError) Error() string {
	return "jsstore: another write to the chain is in flight"
}

func (s *Store) appendOnce(ctx context.Context, link *sigchain.Link) error {
	key := link.Key()
	h, seq, err := s.headAt(ctx, key)
	if err != nil && !errors.Is(err, sigchain.ErrNotFound) {
		return err
	}
	follows := h.Seqno == 0 && link.Seqno() == 1 ||
		h.Seqno > 0 && link.Seqno() == h.Seqno+1 && link.Prev() == h.ID
	if !follows {
		return &sigchain.ConflictError{Head: h}
	}
	if link.Seqno() == 1 {
		return s.appendEldest(ctx, link, seq)
	}
	if d, revoke, ok := link.NamedDevice(); ok {
		return s.appendDevice(ctx, link, seq, d, revoke)
	}
	_, err = s.js.PublishMsg(ctx, &nats.Msg{Subject: s.linkSubject(key, link.Seqno()), Data: link.Bytes()},
		jetstream.WithExpectStream(s.stream),
		jetstream.WithExpectLastSequenceForSubject(seq, s.chainFilter(key)))
	if isConflict(err) {
		// Another append reached the chain first; report its head.
		h, _, herr := s.headAt(ctx, key)
		if errors.Is(herr, sigchain.ErrNotFound) {
			return &sigchain.ConflictError{} // collected meanwhile
		}
		if herr != nil {
			return fmt.Errorf("jsstore: the chain's head moved, and reading it failed: %w", herr)
		}
		if h.Seqno+1 == link.Seqno() && h.ID == link.Prev() {
			// A replicated stream refuses a write while another one to
			// the same chain is proposed but not applied (10164).
			return &inFlightError{head: h}
		}
		return &sigchain.ConflictError{Head: h}
	}
	if err != nil {
		return fmt.Errorf("jsstore: storing link %d of %s: %w", link.Seqno(), key, err)
	}
	return nil
}

// isConflict reports JetStream's "wrong last sequence" (10071, or 10164 on
// replicated streams): another message reached the chain first.
func isConflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
