package callout

import (
	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/jwt/v2"
)

// Defaults for [Config] and [NATSConfig].
const (
	DefaultStream      = wire.Stream   // the JetStream stream holding every inbox
	DefaultChatAccount = "CHAT"        // the inbox stream and the chat-server's gate
	DefaultUserAccount = "USERS"       // where users land: no JetStream
	DefaultAuthAccount = "AUTH"        // where the callout service listens
	DefaultSysAccount  = "SYS"         // the system account
	DefaultQueueGroup  = "kez-callout" // replicas share requests in this group
)

// Subjects KEZ uses. A key token is always the "U…" nkey form.
const (
	// InboxSubjects is the subject filter of the inbox stream, in the chat
	// account. A message to R from S is stored under kez.v1.inbox.R.S;
	// only the chat-server's gate publishes there.
	InboxSubjects = wire.InboxSubjects
	// InboxSubjectPrefix + recipient + "." + sender is an inbox subject.
	InboxSubjectPrefix = wire.InboxSubjectPrefix
	// SendSubjectPrefix + recipient + "." + sender is where a user sends
	// a message: a request the gate checks and stores under the inbox
	// subject, answered with the stream's acknowledgement or a refusal.
	SendSubjectPrefix = wire.SendSubjectPrefix
	// MultiSendSubjectPrefix + sender is where a user sends one payload
	// to many recipient devices at once (a body of wire.EncodeMultiSend):
	// a request the gate checks per recipient as it checks a send, stores
	// once per recipient under its inbox subject and answers once.
	MultiSendSubjectPrefix = wire.MultiSendSubjectPrefix
	// ConsumerSubjectPrefix + key asks the gate to make (or update) that
	// user's durable consumer.
	ConsumerSubjectPrefix = wire.ConsumerSubjectPrefix
	// PullSubjectPrefix + key is a pull request for that user's consumer,
	// which the gate passes on with the reply DeliverSubjectPrefix + key +
	// "." + token.
	PullSubjectPrefix = wire.PullSubjectPrefix
	// AckSubjectPrefix + key takes a batch of that user's
	// acknowledgements, one line each ("+ACK <reply subject of a
	// delivery>"), which the gate checks and passes on to JetStream.
	AckSubjectPrefix = wire.AckSubjectPrefix
	// DeliverSubjectPrefix + key + "." + token is where the consumer
	// delivers what a pull asked for (a stream export to the user account).
	DeliverSubjectPrefix = wire.DeliverSubjectPrefix
	// P2PSubjectPrefix + key is the subject where a user answers file-peer
	// signalling ("where do you listen?").
	P2PSubjectPrefix = wire.P2PSubjectPrefix
)

// SendSubject is the subject a user with key from sends a message to
// the user with key to on.
func SendSubject(to, from kez.PublicKey) string {
	return SendSubjectPrefix + to.String() + "." + from.String()
}

// Permissions returns the exact NATS permissions a user with key k gets in
// the user account. With K = k.String():
//
// Publish:
//
//	kez.v1.send.*.K          send to anyone, as K only (gate)
//	kez.v1.msend.K           send one payload to many, as K only (gate)
//	kez.v1.consumer.K        have K's consumer made (gate)
//	kez.v1.pull.K            pull from it (gate)
//	kez.v1.ack.K             acknowledge what it delivered, in batches (gate)
//	kez.v1.p2p.*             ask any peer where it listens
//	_INBOX.*.>               answer a peer's request (see below)
//
// Subscribe:
//
//	_INBOX.K.>               K's own replies (nats.CustomInboxPrefix), answers to its sends included
//	kez.v1.deliver.K.>       what K's pulls deliver
//	kez.v1.p2p.K             K's own signalling subject
//
// The stream's name no longer shapes a user's grants (no user holds a
// JetStream subject); the parameter stays for callers that pass it.
//
// Users live in an account without JetStream and hold no JetStream
// subject at all. What touches mail crosses into the chat account to the
// chat-server's gate: sends, pulls and acknowledgements as streams the
// user account exports to the chat account alone (the gate acts on their
// subjects, which only K may publish to, and never uses their reply
// subjects), consumer requests as a service import (which rewrites the
// reply subject and is stamped with the account it came from,
// Nats-Request-Info). What comes back crosses as streams: the answers to
// sends (on their reply subjects, which the gate takes only in K's own
// reply namespace _INBOX.K.…) and what pulls deliver
// (kez.v1.deliver.K.…).
// nats-server never passes a message that came through a service import,
// an answer to a user-chosen reply included, on to a stream export, so
// only users' own publishes reach the gate's send, pull and ack subjects.
// The gate checks every acknowledgement line (a verb it knows, the reply
// subject of a delivery of K's own consumer) and publishes it to
// JetStream itself, without a reply subject; an acknowledgement that is
// also a pull request (+NXT) never reaches JetStream. What the gate
// forwards to JetStream carries reply subjects the gate chose. So no
// subject a user picks, reply subjects included, is ever acted on with
// the chat account's rights, and no user creates, deletes or lists
// consumers, reads the stream or calls the JetStream API.
// Each grant is necessary: the permission tests remove each one in turn.
//
// Why publish on _INBOX.*.> and no "allow_responses": answering a peer's
// request means publishing to the peer's reply subject. Response
// permissions would let K publish once to whatever reply subject a
// sender chose, including its own kez.v1.send and kez.v1.ack subjects.
// _INBOX.*.> confines answers to reply namespaces: the worst a user can
// do is drop a message into another user's reply prefix, which that
// user's client discards unless it is waiting for that exact (random)
// subject, and whose content KEZ signs anyway (kez.ContextPeerAddrs).
// Clients answer only requests whose reply subject starts with _INBOX.
func Permissions(k kez.PublicKey, stream string) jwt.Permissions {
	key := k.String()
	return jwt.Permissions{
		Pub: jwt.Permission{Allow: jwt.StringList{
			SendSubjectPrefix + "*." + key,
			MultiSendSubjectPrefix + key,
			ConsumerSubjectPrefix + key,
			PullSubjectPrefix + key,
			AckSubjectPrefix + key,
			P2PSubjectPrefix + "*",
			wire.ReplyPrefix + "*.>",
		}},
		Sub: jwt.Permission{Allow: jwt.StringList{
			wire.ReplyInbox(key) + ".>",
			DeliverSubjectPrefix + key + ".>",
			P2PSubjectPrefix + key,
		}},
	}
}

// GatePermissions returns the permissions of the chat-server's own key
// (see [Keys.Provisioner]) in the chat account: it provisions the inbox
// stream and runs the gate that stands between users and JetStream.
//
// Publish: $JS.API.INFO and $JS.API.STREAM.CREATE|UPDATE|INFO.S (the
// stream); $JS.API.STREAM.PURGE.S (removing read mail: the gate purges
// only one recipient's subjects at or below that recipient's consumer's
// acknowledgement floor); $JS.API.CONSUMER.CREATE.S.> and $JS.API.CONSUMER.INFO|MSG.NEXT.S.*
// (users' consumers, made and pulled on their behalf);
// $JS.API.CONSUMER.DELETE.S.* (the consumer of a device its person
// revoked); $JS.ACK.S.>
// (users' acknowledgements, checked and passed on); kez.v1.inbox.>
// (storing mail); _INBOX.> and _R_.> (refusals of sends, answers to
// consumer requests); kez.v1.revoked (telling the other chat-servers of a
// revocation).
// Subscribe: kez.v1.send.>, kez.v1.msend.>, kez.v1.consumer.>, kez.v1.pull.>,
// kez.v1.ack.> (the gate), kez.v1.revoked
// and _KEZ_GATE.P.> (P the key: its own replies, outside the users' reply
// namespace that the chat account exports to them).
// Nothing deletes the stream or a single message; a consumer only when
// its device was revoked.
func GatePermissions(provisioner, stream string) jwt.Permissions {
	if stream == "" {
		stream = DefaultStream
	}
	return jwt.Permissions{
		Pub: jwt.Permission{Allow: jwt.StringList{
			"$JS.API.INFO",
			"$JS.API.STREAM.CREATE." + stream,
			"$JS.API.STREAM.UPDATE." + stream,
			"$JS.API.STREAM.INFO." + stream,
			"$JS.API.STREAM.PURGE." + stream,
			"$JS.API.CONSUMER.CREATE." + stream + ".>",
			"$JS.API.CONSUMER.INFO." + stream + ".*",
			"$JS.API.CONSUMER.MSG.NEXT." + stream + ".*",
			"$JS.API.CONSUMER.DELETE." + stream + ".*",
			"$JS.ACK." + stream + ".>",
			InboxSubjects,
			wire.ReplyPrefix + ">",
			"_R_.>",
			wire.RevokedSubject,
		}},
		Sub: jwt.Permission{Allow: jwt.StringList{
			SendSubjectPrefix + ">",
			MultiSendSubjectPrefix + ">",
			ConsumerSubjectPrefix + ">",
			PullSubjectPrefix + ">",
			AckSubjectPrefix + ">",
			wire.RevokedSubject,
			wire.GateReplyPrefix + provisioner + ".>",
		}},
	}
}

// Error codes the gate answers a refused request with, in the JetStream
// API error shape {"error":{"code":C,"err_code":E,"description":D}}, so
// that a jetstream client sees them as *jetstream.APIError.
const (
	ErrCodeBadRequest       = wire.ErrCodeBadRequest       // the request is malformed
	ErrCodeUnknownRecipient = wire.ErrCodeUnknownRecipient // the recipient's key is not registered
	ErrCodeSenderQuota      = wire.ErrCodeSenderQuota      // the sender is over its rate limit
	ErrCodeRecipientQuota   = wire.ErrCodeRecipientQuota   // the recipient takes no more mail for now
	ErrCodeSenderUnread     = wire.ErrCodeSenderUnread     // the sender has too many unread messages in all inboxes
	ErrCodeUnavailable      = wire.ErrCodeUnavailable      // the gate cannot reach JetStream or the registry
	ErrCodeSenderRevoked    = wire.ErrCodeSenderRevoked    // the sender is a revoked device
	ErrCodeRecipientRevoked = wire.ErrCodeRecipientRevoked // the recipient is a revoked device
	ErrCodeDevicesChanged   = wire.ErrCodeDevicesChanged   // the send's Kez-Devices header names other devices than the registry's
)

// RequestInfoHeader is the header nats-server stamps on a request that
// crosses a service import: JSON naming the account it came from (and,
// with "share: true", the user and its connection).
const RequestInfoHeader = wire.RequestInfo

// AckWaitHeader, on a user's consumer-info request, asks the gate for
// the consumer's AckWait (a Go duration, clamped to [MinAckWait,
// MaxAckWait]).
const AckWaitHeader = wire.AckWait

// DevicesHeader, set to "1" on a user's consumer request, asks the gate
// for when each current device of the user's person was last seen
// (docs/spec/chat.md §1).
const DevicesHeader = wire.Devices
