package chat

// chat.db's schema: its version and the migrations that build it.

// schemaVersion is kept in PRAGMA user_version: len(migrations).
// migrations[i] brings a database from version i to i+1 (see
// sqlitedb.Migrate).
const schemaVersion = 13

var migrations = []string{
	// 0 → 1
	`
CREATE TABLE messages (
	id           BLOB    NOT NULL,            -- MessageID, 16 bytes
	from_key     TEXT    NOT NULL,            -- sender's key, U…
	to_key       TEXT    NOT NULL,            -- recipient's key, U…
	peer_key     TEXT    NOT NULL,            -- the other party of the conversation
	peer_handle  TEXT    NOT NULL DEFAULT '', -- contact's handle, or the handle a request's chain claims
	incoming     INTEGER NOT NULL,            -- 1 received, 0 sent
	sent_at      INTEGER NOT NULL,            -- sender's clock, Unix ms (signed)
	received_at  INTEGER NOT NULL,            -- this client's clock, Unix ms: stored
	kind         TEXT    NOT NULL,
	ref          BLOB,                        -- MessageID or NULL
	body         BLOB    NOT NULL,
	stream_seq   INTEGER NOT NULL DEFAULT 0,  -- JetStream sequence (delivery or publish ack)
	trust        TEXT    NOT NULL,            -- trusted | held | request
	state        TEXT    NOT NULL DEFAULT '', -- sent messages: sent | failed
	read         INTEGER NOT NULL DEFAULT 0,  -- shown to the user (inbox) or own message
	delivered_at INTEGER,                     -- sent messages: the receipt's signed time, Unix ms
	PRIMARY KEY (from_key, id)
) STRICT;
CREATE INDEX messages_conversation ON messages (peer_key, sent_at, stream_seq);
CREATE INDEX messages_unread ON messages (trust, sent_at, stream_seq) WHERE read = 0;

CREATE TABLE contacts (
	handle       TEXT    PRIMARY KEY,         -- canonical, alice@kez.lat
	key          TEXT    NOT NULL UNIQUE,     -- pinned primary key, U…
	enc_key      BLOB    NOT NULL,            -- X25519 key from the pinned chain
	generation   INTEGER NOT NULL,
	sig_server   TEXT    NOT NULL,            -- base URL the chain is fetched from
	pin_seqno    INTEGER NOT NULL,
	pin_head     TEXT    NOT NULL,            -- link ID (CID) at pin_seqno
	added_at     INTEGER NOT NULL,
	refreshed_at INTEGER NOT NULL,
	verified_at  INTEGER,                     -- fingerprint compared out of band
	flag         TEXT    NOT NULL DEFAULT '', -- '' | key_changed | chain_rewritten
	flag_detail  TEXT    NOT NULL DEFAULT '',
	flag_key     TEXT    NOT NULL DEFAULT '', -- key_changed: the key the handle now names
	flagged_at   INTEGER
) STRICT;

-- The pinned chain of each contact, link by link (exact canonical bytes),
-- so the verified state can be rebuilt and extended without trusting the
-- server for the part already seen.
CREATE TABLE chain_links (
	key   TEXT    NOT NULL,
	seqno INTEGER NOT NULL,
	link  BLOB    NOT NULL,
	PRIMARY KEY (key, seqno)
) STRICT, WITHOUT ROWID;

-- What happened to a contact's pin: added, encryption key rotated, flagged,
-- accepted, verified.
CREATE TABLE contact_events (
	handle TEXT    NOT NULL,
	at     INTEGER NOT NULL,
	event  TEXT    NOT NULL,
	detail TEXT    NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX contact_events_handle ON contact_events (handle, at);

CREATE TABLE meta (
	name  TEXT PRIMARY KEY,
	value TEXT NOT NULL
) STRICT;
`,
	// 1 → 2: message requests are counted against their caps in every
	// received batch that holds one.
	`CREATE INDEX messages_requests ON messages (from_key) WHERE trust = 'request';`,
	// 2 → 3: sessions (format v2, docs/spec/chat.md §6). A sent message is
	// stored with its sealed envelope before it is published, in the
	// transaction that stores the session state its sealing produced.
	`
ALTER TABLE messages ADD COLUMN envelope BLOB;                    -- sent, not yet acknowledged by the stream: the exact bytes published
ALTER TABLE messages ADD COLUMN resends INTEGER NOT NULL DEFAULT 0; -- times sealed again under a newer session (after the recipient's reset)
CREATE INDEX messages_pending ON messages (to_key) WHERE incoming = 0 AND state = 'pending';

-- One Double Ratchet session with one peer (package session), its state
-- serialised. updated_at: Unix ms of the last message opened from the peer
-- under it, or of its creation; the newest established session is the one
-- used for sending.
CREATE TABLE sessions (
	peer        TEXT    NOT NULL,
	id          BLOB    NOT NULL,  -- session ID, 16 bytes
	state       BLOB    NOT NULL,
	updated_at  INTEGER NOT NULL,
	established INTEGER NOT NULL,  -- 1 once a message from the peer was opened under it
	PRIMARY KEY (peer, id)
) STRICT;

-- This device's prekeys (private halves, never leave the device).
CREATE TABLE prekeys (
	id      INTEGER PRIMARY KEY,  -- prekey ID
	private BLOB    NOT NULL,
	created INTEGER NOT NULL,     -- Unix ms
	expires INTEGER NOT NULL      -- Unix ms
) STRICT;

-- Messages that could not be decrypted (no session: this device lost its
-- state), per sender, and whether a new session to them is still due.
CREATE TABLE undecryptable (
	peer      TEXT    PRIMARY KEY,
	count     INTEGER NOT NULL,
	last_at   INTEGER NOT NULL,
	reset_due INTEGER NOT NULL
) STRICT;

-- Peers that started a new session while one with them was established
-- (they lost theirs): what was sent to them without a receipt is due to
-- be sent again.
CREATE TABLE resend_due (
	peer TEXT    PRIMARY KEY,
	at   INTEGER NOT NULL
) STRICT;
`,
	// 3 → 4: the last prekey record fetched for each peer (verified when
	// fetched), so that a session can start while the peer's sig-server is
	// unreachable, as sending to a pinned contact never needed it.
	`
CREATE TABLE peer_prekeys (
	peer       TEXT    PRIMARY KEY,
	record     BLOB    NOT NULL,
	fetched_at INTEGER NOT NULL
) STRICT;
`,
	// 4 → 5: devices (docs/spec/chat.md §8). A message is sealed to each
	// device of its recipient, and a sent copy to each of the user's
	// other devices: every envelope sealed and not yet acknowledged by
	// the stream waits in the outbox (the pending envelopes of the
	// messages table move there). The devices of each contact's pinned
	// chain; the sync-contact messages not yet applied.
	`
CREATE TABLE outbox (
	msg_id     BLOB    NOT NULL,  -- the message ID (of a history message, or of a message not kept: a sync message)
	device     TEXT    NOT NULL,  -- the device it is sealed to: the send subject's recipient
	envelope   BLOB    NOT NULL,  -- the exact bytes to publish
	publish_id TEXT    NOT NULL,  -- its Nats-Msg-Id
	counts     INTEGER NOT NULL,  -- 1: a copy to the message's recipient, whose outcome is the message's
	created_at INTEGER NOT NULL,  -- Unix ms
	PRIMARY KEY (msg_id, device)
) STRICT;
INSERT INTO outbox (msg_id, device, envelope, publish_id, counts, created_at)
	SELECT id, to_key, envelope, lower(hex(id)) || CASE WHEN resends > 0 THEN '.' || resends ELSE '' END, 1, received_at
	FROM messages WHERE incoming = 0 AND state = 'pending' AND envelope IS NOT NULL;
UPDATE messages SET envelope = NULL WHERE envelope IS NOT NULL;

CREATE TABLE contact_devices (
	person         TEXT    NOT NULL,  -- the contact's primary key
	device         TEXT    NOT NULL,
	name           TEXT    NOT NULL,
	primary_device INTEGER NOT NULL,
	added_seqno    INTEGER NOT NULL,
	revoked        INTEGER NOT NULL,
	PRIMARY KEY (person, device)
) STRICT;

CREATE TABLE contact_sync (
	id   INTEGER PRIMARY KEY,
	body BLOB    NOT NULL,  -- a sync-contact body from one of the user's devices
	at   INTEGER NOT NULL
) STRICT;
`,
	// 5 → 6: the person's encryption keys on every device
	// (docs/spec/chat.md §8.6): those this device received, the
	// sync-keys bodies waiting for a fresher chain, and (on an install
	// holding the primary key) the generation sent to each device.
	`
CREATE TABLE encryption_keys (
	generation  INTEGER PRIMARY KEY,
	private     BLOB    NOT NULL,  -- X25519 private key, 32 bytes
	public      BLOB    NOT NULL,  -- its public key, as the chain published it
	from_device TEXT    NOT NULL,  -- the device that sent it
	received_at INTEGER NOT NULL   -- Unix ms
) STRICT;

CREATE TABLE keys_sync (
	id     INTEGER PRIMARY KEY,
	device TEXT    NOT NULL,
	body   BLOB    NOT NULL,  -- a sync-keys body naming a generation newer than the chain known
	at     INTEGER NOT NULL
) STRICT;

CREATE TABLE keys_sent (
	device     TEXT    PRIMARY KEY,
	generation INTEGER NOT NULL,  -- the highest generation sent to it
	at         INTEGER NOT NULL
) STRICT;
`,
	// 6 → 7: copies due (docs/spec/chat.md §8.1): a copy of a message in
	// the history that could not be sealed to one of the devices it was
	// for (its prekey could not be fetched), recorded in the transaction
	// that stores the message, and sealed from the history once it can be.
	`
CREATE TABLE copies_due (
	msg_id     BLOB    NOT NULL,  -- the message ID (a message this user sent: from_key is the user's)
	device     TEXT    NOT NULL,  -- the device the copy is for
	person     TEXT    NOT NULL,  -- that device's person (the user's own key: a sent copy)
	counts     INTEGER NOT NULL,  -- 1: a copy to the message's recipient, whose outcome is the message's
	created_at INTEGER NOT NULL,  -- Unix ms
	attempts   INTEGER NOT NULL,  -- the device's prekey was fetched this many times in vain
	next_at    INTEGER NOT NULL,  -- Unix ms: when it is tried again
	PRIMARY KEY (msg_id, device)
) STRICT;
CREATE INDEX copies_due_device ON copies_due (device, created_at);
CREATE INDEX copies_due_person ON copies_due (person, created_at);
`,
	// 7 → 8: the user's own chain, pinned (docs/spec/chat.md §8.7): the
	// newest state of it this install verified or appended, link by link
	// (exact canonical bytes), which every later fetch must extend.
	`
CREATE TABLE own_chain_links (
	seqno INTEGER PRIMARY KEY,
	link  BLOB    NOT NULL
) STRICT;
`,
	// 8 → 9: groups (docs/spec/chat.md §10): the pinned membership
	// chains, this device's sender keys and where they went, the
	// receiving keys, envelopes waiting for a key, group sends not yet
	// answered and read receipts.
	`
ALTER TABLE messages ADD COLUMN grp TEXT NOT NULL DEFAULT ''; -- a group message: the group's name
CREATE INDEX messages_group ON messages (grp, sent_at, stream_seq) WHERE grp != '';

CREATE TABLE groups (
	name         TEXT    PRIMARY KEY,         -- name@domain
	gid          BLOB    NOT NULL UNIQUE,     -- 32 bytes
	sig_server   TEXT    NOT NULL,
	left_at      INTEGER,                     -- Unix ms: the user was removed or left
	broken       TEXT    NOT NULL DEFAULT '', -- a fork: both heads
	refreshed_at INTEGER NOT NULL,
	joined_at    INTEGER NOT NULL
) STRICT;

CREATE TABLE group_links (
	name  TEXT    NOT NULL,
	seqno INTEGER NOT NULL,
	link  BLOB    NOT NULL,
	PRIMARY KEY (name, seqno)
) STRICT, WITHOUT ROWID;

CREATE TABLE group_events (
	name   TEXT    NOT NULL,
	at     INTEGER NOT NULL,
	seqno  INTEGER NOT NULL,
	event  TEXT    NOT NULL,
	detail TEXT    NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX group_events_name ON group_events (name, at);

CREATE TABLE group_skeys (
	gid     BLOB    NOT NULL,
	epoch   INTEGER NOT NULL,
	state   BLOB    NOT NULL,  -- session.SenderKey, stored form
	created INTEGER NOT NULL,
	PRIMARY KEY (gid, epoch)
) STRICT;

CREATE TABLE group_skey_sent (
	gid    BLOB    NOT NULL,
	epoch  INTEGER NOT NULL,
	device TEXT    NOT NULL,
	PRIMARY KEY (gid, epoch, device)
) STRICT, WITHOUT ROWID;

CREATE TABLE group_rkeys (
	gid      BLOB    NOT NULL,
	epoch    INTEGER NOT NULL,
	device   TEXT    NOT NULL,
	person   TEXT    NOT NULL,
	signing  BLOB    NOT NULL,  -- the sender key's signing key
	state    BLOB    NOT NULL,  -- session.ReceiverKey, stored form
	checked  INTEGER NOT NULL,  -- 0: waits for a fresher chain
	at       INTEGER NOT NULL,
	PRIMARY KEY (gid, epoch, device)
) STRICT;

CREATE TABLE group_held (
	id       INTEGER PRIMARY KEY,
	gid      BLOB    NOT NULL,
	epoch    INTEGER NOT NULL,
	device   TEXT    NOT NULL,
	person   TEXT    NOT NULL,
	envelope BLOB    NOT NULL,
	seq      INTEGER NOT NULL,
	at       INTEGER NOT NULL
) STRICT;
CREATE INDEX group_held_key ON group_held (gid, epoch, device);

CREATE TABLE group_outbox (
	msg_id     BLOB    PRIMARY KEY,
	name       TEXT    NOT NULL,
	envelope   BLOB    NOT NULL,
	devices    TEXT    NOT NULL,  -- the recipient devices, U… separated by spaces
	created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE group_reads (
	msg_id BLOB    NOT NULL,
	reader TEXT    NOT NULL,
	at     INTEGER NOT NULL,
	PRIMARY KEY (msg_id, reader)
) STRICT, WITHOUT ROWID;
`,
	// 9 → 10: groups that scale (docs/spec/chat.md §10.3, §10.5): the
	// envelopes of a pairwise message to many devices (a group key, a
	// group-update) published with one multi-recipient send wait in the
	// outbox marked multi, and each group-update received waits in
	// group_updates until the client acted on it.
	`
ALTER TABLE outbox ADD COLUMN multi INTEGER NOT NULL DEFAULT 0; -- 1: published with a multi-recipient send, a payload per recipient; publish_id is <msg id>-<device>

CREATE TABLE group_updates (
	name TEXT    PRIMARY KEY,  -- the group, name@domain
	body BLOB    NOT NULL,     -- the last group-update body received for it
	at   INTEGER NOT NULL      -- Unix ms: received
) STRICT;
`,
	// 10 → 11: group invitations (docs/spec/chat.md §10.9): who added the
	// user to a group it has not accepted yet.
	`
ALTER TABLE groups ADD COLUMN invited_by TEXT NOT NULL DEFAULT ''; -- U…: an invitation not accepted yet
`,
	// 11 → 12: log views (docs/spec/chat.md §11): the last one sent to
	// each contact, and the split views recorded.
	`
CREATE TABLE log_views_sent (
	peer    TEXT    PRIMARY KEY,  -- the contact's primary key, U…
	digest  BLOB    NOT NULL,     -- SHA-256 of the body last sent
	sent_at INTEGER NOT NULL      -- Unix ms
) STRICT;

CREATE TABLE split_views (
	origin  TEXT    NOT NULL,             -- the log
	ours    BLOB    NOT NULL,             -- the checkpoint this client had accepted (signed note)
	theirs  BLOB    NOT NULL,             -- the one that contradicts it
	contact TEXT    NOT NULL DEFAULT '',  -- U…: the contact whose log-view showed it; '': this client's own fetch
	handle  TEXT    NOT NULL DEFAULT '',
	at      INTEGER NOT NULL,             -- Unix ms
	reason  TEXT    NOT NULL,
	PRIMARY KEY (origin, ours, theirs)
) STRICT;
`,
	// 12 → 13: blocking and read receipts (docs/spec/chat.md §5.1, §4.1):
	// the keys the user blocked, and when a sent message was read.
	`
CREATE TABLE blocked (
	key        TEXT    PRIMARY KEY,  -- U…: a person's key (or a device's)
	blocked_at INTEGER NOT NULL      -- Unix ms
) STRICT;

ALTER TABLE messages ADD COLUMN read_at INTEGER; -- sent messages: the read receipt's signed time, Unix ms
`,
}
