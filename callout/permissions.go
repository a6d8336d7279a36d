package callout

import (
	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/jwt/v2"
)

// Defaults for [Config] and [NATSConfig].
const (
	DefaultStream      = "KEZ_INBOX"   // the JetStream stream holding every inbox
	DefaultChatAccount = "CHAT"        // where users land
	DefaultAuthAccount = "AUTH"        // where the callout service listens
	DefaultSysAccount  = "SYS"         // the system account
	DefaultQueueGroup  = "kez-callout" // replicas share requests in this group
)

// Subjects KEZ uses. A key token is always the "U…" nkey form.
const (
	// InboxSubjects is the subject filter of the inbox stream. A message to
	// R from S goes to kez.v1.inbox.R.S.
	InboxSubjects = "kez.v1.inbox.>"
	// P2PSubjectPrefix + key is the subject where a user answers file-peer
	// signalling ("where do you listen?").
	P2PSubjectPrefix = "kez.v1.p2p."
	// InboxSubjectPrefix + recipient + "." + sender is an inbox subject.
	InboxSubjectPrefix = "kez.v1.inbox."
)

// Permissions returns the exact NATS permissions a user with key k gets in
// the chat account, given the inbox stream's name (stream "" means
// [DefaultStream]). With K = k.String() and S = the stream:
//
// Publish:
//
//	kez.v1.inbox.*.K                                  send to anyone's inbox, as K only
//	$JS.API.CONSUMER.CREATE.S.K.kez.v1.inbox.K.>      create/update K's own durable consumer
//	$JS.API.CONSUMER.INFO.S.K                         inspect it
//	$JS.API.CONSUMER.MSG.NEXT.S.K                     pull from it (Fetch, Messages)
//	$JS.ACK.S.K.>                                     acknowledge what it delivered
//	kez.v1.p2p.*                                      ask any peer where it listens
//	_INBOX.*.>                                        answer a peer's request (see below)
//
// Subscribe:
//
//	_INBOX.K.>                                        K's own replies (nats.CustomInboxPrefix)
//	kez.v1.p2p.K                                      K's own signalling subject
//
// The consumer is named after the key and its filter must lie inside K's
// inbox: nats.go sends a single-filter create to
// $JS.API.CONSUMER.CREATE.S.<name>.<filter> and the server refuses a body
// whose filter differs from the subject's, so K can neither read nor touch
// another user's consumer. Nothing grants $JS.API.DIRECT.GET,
// $JS.API.STREAM.MSG.GET, stream management, or any other consumer.
//
// Why publish on _INBOX.*.> and no "allow_responses": answering a peer's
// request means publishing to the peer's reply subject. Response
// permissions would let K publish once to whatever reply subject a
// sender chose, including $JS.API.STREAM.DELETE.S, turning every user
// into a confused deputy. _INBOX.*.> confines answers to reply
// namespaces: the worst a user can do is drop a message into another
// user's reply prefix, which that user's client discards unless it is
// waiting for that exact (random) subject, and whose content KEZ signs
// anyway (kez.ContextPeerAddrs). Requests whose answers matter should use
// a one-off inbox rather than nats.Conn.Request's shared prefix, which a
// peer learns when answering.
func Permissions(k kez.PublicKey, stream string) jwt.Permissions {
	if stream == "" {
		stream = DefaultStream
	}
	key := k.String()
	return jwt.Permissions{
		Pub: jwt.Permission{Allow: jwt.StringList{
			InboxSubjectPrefix + "*." + key,
			"$JS.API.CONSUMER.CREATE." + stream + "." + key + "." + InboxSubjectPrefix + key + ".>",
			"$JS.API.CONSUMER.INFO." + stream + "." + key,
			"$JS.API.CONSUMER.MSG.NEXT." + stream + "." + key,
			"$JS.ACK." + stream + "." + key + ".>",
			P2PSubjectPrefix + "*",
			"_INBOX.*.>",
		}},
		Sub: jwt.Permission{Allow: jwt.StringList{
			"_INBOX." + key + ".>",
			P2PSubjectPrefix + key,
		}},
	}
}

// ProvisionerPermissions returns the permissions of the provisioner key
// (see [Keys.Provisioner]) in the chat account: enough for
// [ProvisionInbox] to create, update and inspect the inbox stream, and
// nothing else (no reading, deleting or purging it).
//
// Publish: $JS.API.INFO, $JS.API.STREAM.CREATE.S, $JS.API.STREAM.UPDATE.S,
// $JS.API.STREAM.INFO.S. Subscribe: _INBOX.P.> (P the provisioner key).
func ProvisionerPermissions(provisioner, stream string) jwt.Permissions {
	if stream == "" {
		stream = DefaultStream
	}
	return jwt.Permissions{
		Pub: jwt.Permission{Allow: jwt.StringList{
			"$JS.API.INFO",
			"$JS.API.STREAM.CREATE." + stream,
			"$JS.API.STREAM.UPDATE." + stream,
			"$JS.API.STREAM.INFO." + stream,
		}},
		Sub: jwt.Permission{Allow: jwt.StringList{
			"_INBOX." + provisioner + ".>",
		}},
	}
}
