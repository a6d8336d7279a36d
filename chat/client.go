package chat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/internal/inbox"
	"github.com/kez-lat/kez-chat/internal/lifecycle"
	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of [Config].
const (
	// DefaultStream is the JetStream stream holding every inbox (the
	// chat-server provisions it; see package callout).
	DefaultStream = wire.Stream
	// DefaultRefreshInterval is how often a contact's handle and chain are
	// checked again on send and receive.
	DefaultRefreshInterval = time.Minute
	// DefaultRefreshTimeout bounds one such check.
	DefaultRefreshTimeout = 5 * time.Second
	// DefaultAckWait is how long the server waits for this client to
	// acknowledge a delivered message before delivering it again.
	DefaultAckWait = 30 * time.Second
	// DefaultLogViewInterval is how often an unchanged log view is sent
	// again to a contact.
	DefaultLogViewInterval = time.Hour
)

// inboxPrefix starts every inbox subject: kez.v1.inbox.<to>.<from>.
const inboxPrefix = wire.InboxSubjectPrefix

// sendSubject is where a message to `to` from `from` is sent: the
// chat-server's gate checks it and stores it under the inbox subject.
func sendSubject(to, from kez.PublicKey) string {
	return wire.SendSubjectPrefix + to.String() + "." + from.String()
}

// Config configures [Open]. Client says who the user is, where their
// state lives and which servers they use (see package client); its
// Identity and Home are required, and a client with only those manages
// contacts and history offline. The other fields tune the messaging
// client and default when zero.
type Config struct {
	// Client is the configuration the client parts share: identity,
	// state folder (chat.db lives in Client.Home), home chat-server,
	// broker (Client.NATSURL; empty: offline, and Send, Sync and Run
	// return ErrOffline), resolver, HTTP client, logger and clock. Open
	// completes it with [client.Config.Discover].
	Client client.Config

	// Stream is the inbox stream; "" means DefaultStream.
	Stream string
	// RefreshInterval: how often a contact is checked again; 0 means
	// DefaultRefreshInterval, a negative value checks on every message.
	RefreshInterval time.Duration
	// RefreshTimeout bounds one check; 0 means DefaultRefreshTimeout.
	RefreshTimeout time.Duration
	// AckWait is the consumer's redelivery delay; 0 means DefaultAckWait.
	// The chat-server keeps it between 250 ms and 10 minutes.
	AckWait time.Duration

	// A message from a key that is not a contact (a request) is stored at
	// once and its sender's handle looked up in the background (see
	// docs/spec/chat.md §5). StrangerLookups is how many lookups run at
	// once (0: DefaultStrangerLookups), StrangerQueue how many senders may
	// wait for one (0: DefaultStrangerQueue; a sender beyond it is looked
	// up on its next message), StrangerRetry how long a failed lookup is
	// remembered (0: DefaultStrangerRetry). Each lookup is bounded by
	// RefreshTimeout.
	StrangerLookups int
	StrangerQueue   int
	StrangerRetry   time.Duration
	// Caps on stored message requests, per sender and in all, by count and
	// by body bytes; a request over a cap is dropped, never stored, and
	// counted in Stats.RequestsDropped. 0 means the default
	// (DefaultMaxRequestsPerSender, DefaultMaxRequestBytesPerSender,
	// DefaultMaxRequests, DefaultMaxRequestBytes), a negative value no cap.
	MaxRequestsPerSender     int
	MaxRequestBytesPerSender int64
	MaxRequests              int
	MaxRequestBytes          int64
	// GroupUpdateInterval bounds the fetches of a pinned group's chain
	// that group-updates (anyone may send one) make: at most one per
	// group per interval, later ones kept and followed once it is over
	// (docs/spec/chat.md §10.10). 0 means DefaultGroupUpdateInterval, a
	// negative value no bound.
	GroupUpdateInterval time.Duration
	// NATSOptions are passed to Connect after the client's own (e.g.
	// nats.ReconnectWait, or a custom dialer).
	NATSOptions []nats.Option

	// OnSessionReset, if set, is told each time messages from a peer
	// could not be decrypted because this client has no session for them
	// (its state was lost: a wiped state folder, a device restored from
	// the words). The client starts a new session with that peer at once
	// (a contact; anyone else once added as one) and the peer sends
	// again what got no receipt. It is called after the batch holding
	// them was stored, from the goroutine receiving; it must not block.
	OnSessionReset func(SessionReset)
	// OnContactDevice, if set, is told of each device a check of a
	// contact found added to or revoked from the contact's chain (a
	// send, a receive, CheckContact or AddContact checks; see
	// ContactDeviceEvents). It is news, not a warning: the contact's
	// primary key signed it. It is called after the check was stored,
	// from the goroutine that checked; it must not block.
	OnContactDevice func(ContactDevice)
	// OnGroupEvent, if set, is told of each change to a group the client
	// sees (docs/spec/chat.md §10.5), a fork ("fork") above all, which is
	// also logged as an error. It is called after the change was stored,
	// from the goroutine that saw it; it must not block.
	OnGroupEvent func(GroupEvent)
	// LogViewInterval is how often an unchanged log view is sent again
	// to a contact (docs/spec/chat.md §11; a changed one goes once a
	// minute at most): 0 means DefaultLogViewInterval, a negative value
	// sends none (contacts' log views are still checked).
	LogViewInterval time.Duration
	// OnSplitView, if set, is told of each split view the client records
	// (see [Client.SplitViews]): a sig-server's log, or a contact's own
	// chain head, that contradicts what this client was shown. It is
	// also logged as an error, with both checkpoints. It is called after
	// the split view was stored, from the goroutine that found it; it
	// must not block.
	OnSplitView func(SplitView)
	// NoReadReceipts: MarkRead sends contacts no read receipts
	// (docs/spec/chat.md §4.1). Delivery receipts are sent all the same.
	NoReadReceipts bool
	// OnReceipt, if set, is told of each receipt (delivered or read) that
	// changed messages this client sent, once it was stored: the person
	// who sent it, its status and the messages it changed. It is called
	// from the goroutine receiving; it must not block.
	OnReceipt func(ReceiptEvent)
}

// Client is a KEZ chat user's messaging client: it keeps contacts, sends and
// receives sealed messages through the broker and keeps the history, all
// in one state folder. Make one with [Open] and Close it when done. A
// Client is safe for concurrent use; one process at a time should receive
// for a state folder (two would only duplicate work, never messages).
type Client struct {
	cfg      Config
	cc       client.Config // cfg.Client, discovered
	ownLog   bool          // Open's Discover made cc.Log: Close closes it
	id       *kez.Identity // the primary identity; nil on a linked device
	dev      *kez.Identity // this device's: login, sessions, prekeys
	devKey   kez.PublicKey
	me       kez.PublicKey // the person
	log      *slog.Logger
	now      func() time.Time
	httpc    *http.Client
	db       *store
	sig      *sigchain.Client
	resolver *handles.Resolver

	nc   *nats.Conn
	js   *inbox.Publisher
	cons *inbox.Puller

	opener atomic.Pointer[Opener]
	gens   atomic.Uint32 // the highest own encryption generation accepted

	keyring     atomic.Pointer[Keyring] // the person's encryption keys other devices sent (keys.go)
	keysMu      sync.Mutex              // one rotation or distribution at a time
	keysDue     atomic.Bool             // a distribution is due
	keysRunning atomic.Bool             // the background distribution runs

	mu         sync.Mutex // guards the maps below and every contactState
	byHandle   map[string]*contactState
	byKey      map[kez.PublicKey]*contactState
	byDevice   map[kez.PublicKey][]*contactState // every device of every contact's pinned chain: the contacts listing it
	requesters map[kez.PublicKey]requester
	keyChains  keyChains // chains of keys that are not contacts
	devs       deviceState
	ownPin     ownPin // the user's own chain as pinned here (ownchain.go)
	strangers  *strangerLookups

	recvMu sync.Mutex   // one batch is processed at a time
	syncMu sync.Mutex   // the queued sync-contact messages are applied by one goroutine
	live   atomic.Int32 // Run loops receiving

	waitMu  sync.Mutex
	waiters map[MessageID]waiter

	peerPrekeys peerPrekeys // peers whose sig-server had no prekey
	resets      resets      // sessions being reset

	bg       lifecycle.Gate // background jobs (prekey rotation, session resets, resends)
	bgCtx    context.Context
	bgCancel context.CancelFunc

	work  lifecycle.Gate // Send, Sync and Run calls under way; stopped by Shutdown and Close
	sends sync.WaitGroup // goroutines waiting for publish acks
	// outgoing: the messages whose stored envelopes this client is
	// publishing now; the outbox loop publishes the others (send_queue.go).
	outgoing outgoing
	closing  chan struct{} // closed by Close: every wait ends

	reconMu     sync.Mutex
	reconnected chan struct{} // closed and replaced at each reconnect

	rmu          sync.RWMutex // guards sending on receipts against its close
	receipts     chan []*Entry
	rclosed      bool
	receiptsDone chan struct{}
	closed       sync.Once

	due dueWork // copies due (due.go)

	logViews logViews // log views sent and received (logview.go)

	groups  groupsIndex    // the pinned groups (groups.go)
	members memberChains   // chains of group members who are no contacts
	unnamed unnamedSenders // group senders not named yet (nameStoredGroupSenders)
	gjoin   sync.Mutex     // one group joined (from a group-update) at a time

	blocked blockList // keys the user blocked (block.go)

	stats clientStats
}

// Open completes cfg.Client ([client.Config.Discover]: the home domain and
// sig-server from the chat-server, unless given), opens the state folder
// (creating chat.db if needed), loads the contacts, and, if
// cfg.Client.NATSURL is set, logs in to NATS with the device's identity
// (cfg.Client.Device, else the primary Identity; [Connect]) and creates or
// updates the device's durable consumer: a pull consumer named after the
// device key on the inbox stream, filtered to kez.v1.inbox.<device>.>,
// as the auth callout permits. Nothing is received
// until [Client.Sync] or [Client.Run].
//
// Errors: those of Discover (client.ErrNoIdentity, client.ErrNoHome, a
// chat-server that cannot tell its domain), a database that cannot be
// opened, ErrNotRegistered or ErrUnreachable from Connect, ErrNoStream.
func Open(ctx context.Context, cfg Config) (c *Client, err error) {
	discovered := cfg.Client.Log == nil
	cc, err := cfg.Client.Discover(ctx)
	if err != nil {
		return nil, err
	}
	if discovered {
		// The log pins Discover opened are this client's to close.
		defer func() {
			if err != nil {
				cc.Close()
			}
		}()
	}
	cfg.Client = cc
	if cfg.Stream == "" {
		cfg.Stream = DefaultStream
	}
	if cfg.RefreshInterval == 0 {
		cfg.RefreshInterval = DefaultRefreshInterval
	}
	if cfg.RefreshTimeout <= 0 {
		cfg.RefreshTimeout = DefaultRefreshTimeout
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = DefaultAckWait
	}
	if cfg.LogViewInterval == 0 {
		cfg.LogViewInterval = DefaultLogViewInterval
	}
	cfg.setStrangerDefaults()
	c = &Client{
		ownLog: discovered,
		cfg:    cfg, cc: cc, id: cc.Identity, dev: cc.DeviceIdentity(), devKey: cc.DeviceKey(), me: cc.PersonKey(),
		log: cc.Logger, now: cc.Clock, httpc: cc.HTTPClient, resolver: cc.Resolver,
		byHandle: map[string]*contactState{}, byKey: map[kez.PublicKey]*contactState{}, byDevice: map[kez.PublicKey][]*contactState{},
		requesters: map[kez.PublicKey]requester{},
		waiters:    map[MessageID]waiter{}, reconnected: make(chan struct{}), closing: make(chan struct{}),
	}
	c.bgCtx, c.bgCancel = context.WithCancel(context.Background())
	c.outgoing.kick = make(chan struct{}, 1)
	c.initDevices()
	c.initDue()
	c.log = c.log.With("component", "chat", "me", c.me.String())
	if c.devKey != c.me {
		c.log = c.log.With("device", c.devKey.String())
	}
	c.sig = &sigchain.Client{BaseURL: cc.SigServerURL, HTTPClient: c.httpc, VerifyOptions: c.verifyOpts(), Log: cc.Log}
	if err := os.MkdirAll(cc.Home, 0o700); err != nil {
		return nil, fmt.Errorf("chat: making the state folder: %w", err)
	}
	db, err := openStore(filepath.Join(cc.Home, DBFileName))
	if err != nil {
		return nil, err
	}
	c.db, db.log = db, c.log
	if changed, err := db.adoptDevice(ctx, c.devKey, c.me); err != nil {
		db.close()
		return nil, err
	} else if changed {
		c.log.Info("this state folder is now another device: the sessions and prekeys of the one before were dropped, its unpublished copies are sealed again")
	}
	if err := c.loadKeyring(ctx); err != nil {
		db.close()
		return nil, err
	}
	if err := c.loadContacts(ctx); err != nil {
		db.close()
		return nil, err
	}
	if err := c.loadOwnChain(ctx); err != nil {
		db.close()
		return nil, err
	}
	if err := c.loadGroups(ctx); err != nil {
		db.close()
		return nil, err
	}
	if err := c.loadBlocked(ctx); err != nil {
		db.close()
		return nil, err
	}
	if err := c.setupOpener(ctx); err != nil {
		db.close()
		return nil, err
	}
	c.startStrangers()
	if cc.SigServerURL != "" {
		c.background(c.applyQueuedKeys)
	}
	if cc.NATSURL != "" {
		if err := c.connect(ctx); err != nil {
			c.stopStrangers()
			db.close()
			return nil, err
		}
	}
	if cc.SigServerURL != "" {
		// Also offline (contacts, history): a user whose client has run
		// once can be sent messages in sessions.
		if err := c.rotatePrekeys(ctx); err != nil {
			c.log.Warn("your prekey could not be made or published; peers that have no session with you send format v1 until it is", "err", err)
		}
	}
	if c.nc != nil {
		c.startSessions(ctx)
	}
	return c, nil
}

// startSessions keeps rotating this device's prekey while the client runs,
// publishes again, as sealed, the messages stored but not acknowledged by
// the stream before the client last stopped (and, after each reconnect,
// those left for the connection: outboxLoop), and does the resets and
// resends left due.
func (c *Client) startSessions(ctx context.Context) {
	if c.cc.SigServerURL != "" {
		c.background(c.prekeyLoop)
	}
	if err := c.republishPending(ctx); err != nil {
		c.log.Warn("publishing the messages left pending", "err", err)
	}
	c.background(c.runDue)
	c.background(c.dueLoop)
	c.background(func(ctx context.Context) { c.republishGroups(ctx) })
	c.background(c.outboxLoop)
	c.background(c.followRecorded)
	c.keysChanged()
}

// background runs job on its own goroutine until it returns; Shutdown and
// Close cancel its ctx and wait for it. It reports false (and does not
// run job) once the client is closing.
func (c *Client) background(job func(ctx context.Context)) bool {
	if !c.bg.Enter() {
		return false
	}
	go func() {
		defer c.bg.Leave()
		job(c.bgCtx)
	}()
	return true
}

// stopBackground starts no more background jobs and waits for those
// under way to end (the prekey rotation ends at once), or, once ctx ends,
// cancels them.
func (c *Client) stopBackground(ctx context.Context) error {
	c.bg.Stop()
	err := lifecycle.Wait(ctx, c.bg.Idle())
	c.bgCancel()
	if err != nil {
		<-c.bg.Idle()
	}
	return err
}

// Key returns the user's key: the person's primary key, which contacts
// pin and the history is kept under (see DeviceKey for this device's).
func (c *Client) Key() kez.PublicKey { return c.me }

// Conn returns the NATS connection (nil for an offline client), for
// embedders that also use it for other things. Do not close it.
func (c *Client) Conn() *nats.Conn { return c.nc }

// setupOpener reads the user's own chain (its devices), and, on an install
// that holds the primary key, accepts format 1 envelopes sealed to the
// encryption key generations 0 to the one the chain publishes (or the
// last one known, if the sig-server cannot be reached).
func (c *Client) setupOpener(ctx context.Context) error {
	var gen uint32
	if v, err := c.db.getMeta(ctx, "own_generation"); err != nil {
		return err
	} else if v != "" {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return fmt.Errorf("chat: database: own_generation %q: %w", v, err)
		}
		gen = uint32(n)
	}
	if c.cc.SigServerURL != "" {
		st, err := c.fetchOwnChain(ctx)
		switch {
		case err == nil && st.EncryptionGeneration() > gen:
			gen = st.EncryptionGeneration()
			if err := c.db.setMeta(ctx, "own_generation", strconv.FormatUint(uint64(gen), 10)); err != nil {
				return err
			}
		case errors.Is(err, ErrOwnChainRewritten):
			// Logged by fetchOwnChain; the pinned chain stays.
		case err != nil && !errors.Is(err, sigchain.ErrNotFound):
			c.log.Warn("cannot fetch your own sigchain; accepting the encryption keys known so far", "err", err)
		}
	}
	if st := c.pinnedOwnChain(); st != nil {
		gen = max(gen, st.EncryptionGeneration())
	}
	return c.setGenerations(gen)
}

func (c *Client) setGenerations(max uint32) error {
	if c.id == nil || c.devKey != c.me {
		// Format 1 travels only to and from a person's primary device.
		c.gens.Store(max)
		return nil
	}
	gens := make([]uint32, 0, max+1)
	for g := uint32(0); g <= max; g++ {
		gens = append(gens, g)
	}
	o, err := NewOpener(c.id, &OpenOptions{Generations: gens, Now: c.now})
	if err != nil {
		return err
	}
	c.opener.Store(o)
	c.gens.Store(max)
	return nil
}

// connect logs in to NATS and sets up JetStream and the consumer.
func (c *Client) connect(ctx context.Context) error {
	log := c.log
	opts := []nats.Option{
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from NATS", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("reconnected to NATS", "url", nc.ConnectedUrlRedacted())
			c.signalReconnect()
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { log.Warn("NATS error", "err", err) }),
	}
	nc, err := Connect(ctx, c.cc.NATSURL, c.dev, append(opts, c.cc.NATSOptions...)...)
	if err != nil {
		return err
	}
	// Users reach the inbox stream only through the chat-server's gate
	// (see pull.go); JetStream's publish acknowledgements come back
	// through it too.
	js, err := inbox.NewPublisher(nc, c.devKey.String(), 1024, 30*time.Second)
	if err != nil {
		nc.Close()
		return fmt.Errorf("chat: subscribing to your sends' answers: %w", err)
	}
	if _, err := inbox.Open(ctx, nc, c.devKey.String(), c.cfg.AckWait); err != nil {
		nc.Close()
		if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("%w: %s (is the chat server running and connected to this NATS?)", ErrNoStream, c.cfg.Stream)
		}
		return fmt.Errorf("chat: opening your inbox on %s: %w", c.cfg.Stream, refusal(err))
	}
	cons := inbox.NewPuller(nc, c.devKey.String(), c.cfg.Stream)
	c.nc, c.js, c.cons = nc, js, cons
	c.receipts, c.receiptsDone = make(chan []*Entry, 64), make(chan struct{})
	go c.receiptWorker()
	return nil
}

// signalReconnect wakes whoever waits for the next reconnect.
func (c *Client) signalReconnect() {
	c.reconMu.Lock()
	close(c.reconnected)
	c.reconnected = make(chan struct{})
	c.reconMu.Unlock()
}

// nextReconnect returns a channel closed at the next reconnect.
func (c *Client) nextReconnect() <-chan struct{} {
	c.reconMu.Lock()
	defer c.reconMu.Unlock()
	return c.reconnected
}

// Shutdown closes the client gracefully. It takes no new work at once
// (Send, Sync and Run return [ErrClosed]; Run loops stop asking for
// messages and process what was delivered to them), then waits until the
// calls under way returned, the queued delivery receipts are sent, the
// acknowledgements of what was received reached the server and the
// stream acknowledged every send in flight (a send waiting for the
// connection to NATS does not hold it up: it ends with [ErrClosed] and
// [ErrQueued], pending, published at the next start), and closes as
// [Client.Close] does. If ctx ends first it closes at once and returns ctx's error: sends
// not yet acknowledged fail with ErrClosed (the stream may still store
// them). A Run handler that calls Shutdown waits for its own Run loop
// until ctx ends: call it from elsewhere.
func (c *Client) Shutdown(ctx context.Context) error {
	c.work.Stop()
	err := lifecycle.Wait(ctx, c.work.Idle())
	if err == nil {
		err = c.stopBackground(ctx)
	}
	if err == nil {
		err = c.stopReceipts(ctx)
	}
	if err == nil && c.cons != nil {
		// What Run and Sync acknowledged is queued for the gate in
		// batches: send it before the connection closes, or it would be
		// delivered again (and dropped as a duplicate) next time.
		err = c.cons.FlushAcks(ctx)
		if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrConnectionReconnecting) {
			err = nil // not connected: delivered again later, as after Close
		}
	}
	if err == nil {
		// No send starts any more: the calls that could have ended and the
		// receipt worker stopped.
		acked := make(chan struct{})
		go func() { c.sends.Wait(); close(acked) }()
		err = lifecycle.Wait(ctx, acked)
	}
	return errors.Join(err, c.Close())
}

// Close closes the client at once: Run loops return [ErrClosed] without
// processing more (what they were delivered is delivered again later),
// sends still waiting for the stream's acknowledgement fail with
// ErrClosed (the stream may still store them; they stay pending in the
// history and are published again, as sealed, when a client of this
// state folder next connects), the delivery receipts
// and the acknowledgements of what was received queued are handed to
// the connection, which is closed, and so is the
// database, and the log pins Open opened (client.Config.Close). Use
// [Client.Shutdown] to let the work under way finish. It is safe to call
// more than once.
func (c *Client) Close() error {
	c.work.Stop()
	var err error
	c.closed.Do(func() {
		c.bg.Stop()
		c.bgCancel()
		<-c.bg.Idle()
		c.stopReceipts(context.Background())
		close(c.closing)
		if c.cons != nil {
			// Acknowledgements of what was stored are queued for the gate:
			// hand them to the connection, whose Close sends its buffer.
			<-c.cons.AcksHanded()
		}
		if c.nc != nil {
			c.nc.Close()
		}
		c.sends.Wait()
		c.stopStrangers()
		err = c.db.close()
		if c.ownLog {
			err = errors.Join(err, c.cc.Close())
		}
	})
	return err
}

// stopReceipts ends the receipt worker, which sends what is queued first
// (handing it to the connection), and waits for it or for ctx.
func (c *Client) stopReceipts(ctx context.Context) error {
	if c.receipts == nil {
		return nil
	}
	c.rmu.Lock()
	if !c.rclosed {
		c.rclosed = true
		close(c.receipts)
	}
	c.rmu.Unlock()
	return lifecycle.Wait(ctx, c.receiptsDone)
}
