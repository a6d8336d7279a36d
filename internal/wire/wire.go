// Package wire is the one owner of the names KEZ's servers and clients
// must agree on: the inbox stream, NATS subjects and reply prefixes,
// headers, the gate's error codes and the sig-server's HTTP route.
// Package callout exports the NATS names to embedders and package
// sigchain the route; chat, files, handles, natsconn and the servers use
// them from here, so that no client imports a server's package and no
// name is typed twice. A test checks that no other package spells them.
package wire

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"
)

// Stream is the name of the JetStream stream holding every inbox (the
// default; an operator may name it otherwise).
const Stream = "KEZ_INBOX"

// ReplyInbox returns the reply-subject prefix of the user with this key,
// ReplyPrefix + key ("_INBOX.<key>"), without a trailing dot: the only
// reply namespace the auth callout lets that user subscribe to.
func ReplyInbox(key string) string { return ReplyPrefix + key }

// ChainsPath is the sig-server's route: a key's chain is at
// ChainsPath + key, its links are appended at ChainsPath + key + "/links".
const ChainsPath = "/v1/chains/"

// PrekeysPath is the sig-server's prekey directory: a key's signed
// prekey record is at PrekeysPath + key (PUT to publish, GET to fetch).
const PrekeysPath = "/v1/prekeys/"

// GroupsPath is the sig-server's group route: POST GroupsPath appends a
// link of a group's membership chain, GET GroupsPath + "/" + name reads
// the chain.
const GroupsPath = "/v1/groups"

// InfoPath is where a chat-server describes itself (GET, JSON: its handle
// domain and sig-server), and a sig-server names its transparency log
// (docs/spec/translog.md).
const InfoPath = "/v1/info"

// ChainSubjectPrefix starts the subjects of a sig-server's JetStream store
// (package sigchain/jsstore): ChainSubjectPrefix + "." + key.
const ChainSubjectPrefix = "kez.v1.chain"

// Subjects. A key token is always the "U…" nkey form.
const (
	InboxSubjects         = "kez.v1.inbox.>"   // the inbox stream's subjects
	InboxSubjectPrefix    = "kez.v1.inbox."    // + recipient + "." + sender
	SendSubjectPrefix     = "kez.v1.send."     // + recipient + "." + sender: a send request to the gate
	ConsumerSubjectPrefix = "kez.v1.consumer." // + key: a request to the gate to make that user's consumer
	PullSubjectPrefix     = "kez.v1.pull."     // + key: a pull request to the gate for that user's consumer
	AckSubjectPrefix      = "kez.v1.ack."      // + key: a batch of acknowledgements to the gate for that user's consumer
	DeliverSubjectPrefix  = "kez.v1.deliver."  // + key + "." + token: where a pull delivers
	P2PSubjectPrefix      = "kez.v1.p2p."      // + key: file-peer signalling
	// ReplyPrefix + key + "." is how every reply subject of that user
	// starts (its nats.go inbox prefix): the answers to its sends come
	// there, as to any request.
	ReplyPrefix = "_INBOX."
	// GateReplyPrefix + key is the chat-server's own reply prefix, outside
	// the users' reply namespace (which the chat account exports to them).
	GateReplyPrefix = "_KEZ_GATE."
	// AdminReplyPrefix + "." is how the reply subjects of the operator's
	// admin login in the chat account start (its inbox prefix), outside
	// the users' reply namespace.
	AdminReplyPrefix = "_KEZ_ADMIN"
	// KickReplyPrefix + "." is how the reply subjects of the chat-server's
	// kicker login in the system account start (its inbox prefix).
	KickReplyPrefix = "_KEZ_KICK"
	// RevokedSubject is where a chat-server tells the others, in the chat
	// account, that a device was revoked (the body: its key), so that
	// their gates look it up again at once.
	RevokedSubject = "kez.v1.revoked"
)

// Headers.
const (
	// RequestInfo is stamped by nats-server on a request crossing a
	// service import with "share: true".
	RequestInfo = "Nats-Request-Info"
	// AckWait, on a consumer request to the gate, asks for that AckWait
	// (a Go duration).
	AckWait = "Kez-Ack-Wait"
	// Devices, set to "1" on a consumer request to the gate, asks for
	// when each current device of the requester's person was last seen
	// (DeviceSeen). On a send, set to DevicesDigest of the recipient
	// person's current devices as the sender's copy of their chain lists
	// them: the gate refuses the send with ErrCodeDevicesChanged if the
	// registry lists others.
	Devices = "Kez-Devices"
)

// DevicesDigest is the value of the Devices header on a send: the first
// 8 bytes, in lowercase hex, of SHA-256 over a person's current device
// keys (their "U…" text), sorted and joined by "\n".
func DevicesDigest(keys []string) string {
	ks := slices.Clone(keys)
	slices.Sort(ks)
	sum := sha256.Sum256([]byte(strings.Join(ks, "\n")))
	return hex.EncodeToString(sum[:8])
}

// DeviceSeen is one device in the gate's answer to a consumer request
// with the Devices header: its key ("U…") and when the chat-server last
// saw it pull from its inbox or ask for it (Unix seconds; 0: it does not
// know, or never).
type DeviceSeen struct {
	Key        string `json:"key"`
	LastActive int64  `json:"last_active,omitempty"`
}

// Error codes of the gate, in the JetStream API error shape.
const (
	ErrCodeBadRequest       = 21400
	ErrCodeUnknownRecipient = 21404
	ErrCodeSenderQuota      = 21429
	ErrCodeRecipientQuota   = 21430
	ErrCodeSenderUnread     = 21431
	ErrCodeUnavailable      = 21503
	// ErrCodeSenderRevoked: the sender is a device its person revoked.
	ErrCodeSenderRevoked = 21403
	// ErrCodeRecipientRevoked: the recipient is a device its person
	// revoked; it receives nothing any more.
	ErrCodeRecipientRevoked = 21410
	// ErrCodeDevicesChanged: the send's Devices header does not match the
	// recipient person's current devices in the registry; nothing was
	// stored.
	ErrCodeDevicesChanged = 21409
)

// Acknowledgements to the gate: the body of a message to AckSubjectPrefix
// + key is one line per acknowledgement, "<verb> <ack subject>\n", the
// verb one of AckVerbAck, AckVerbNak (optionally followed by a space and a
// Go duration, the redelivery delay), AckVerbTerm, AckVerbProgress, the
// subject the reply subject of a delivery of that user's consumer. At
// most MaxAckLines lines and MaxAckBytes bytes per message.
const (
	AckVerbAck      = "+ACK"
	AckVerbNak      = "-NAK"
	AckVerbTerm     = "+TERM"
	AckVerbProgress = "+WPI"
	MaxAckLines     = 1024
	MaxAckBytes     = 128 << 10
)

// PullRequest is the body of a pull request to the gate: JetStream's
// pull request fields the gate passes on (clamped), and the token that
// names the deliver subject: DeliverSubjectPrefix + key + "." + Deliver.
type PullRequest struct {
	Batch     int    `json:"batch"`
	Expires   int64  `json:"expires,omitempty"`        // nanoseconds
	NoWait    bool   `json:"no_wait,omitempty"`        // answer 404 at once when nothing is waiting
	Heartbeat int64  `json:"idle_heartbeat,omitempty"` // nanoseconds
	Deliver   string `json:"deliver"`                  // 1 to 32 letters and digits
}
