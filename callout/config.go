package callout

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/nats-io/nkeys"
)

// ConfigOptions shape the nats.conf text rendered by [NATSConfig]. The
// zero value renders the snippet an operator adds to an existing server.
type ConfigOptions struct {
	ChatAccount   string        // default [DefaultChatAccount]
	UserAccount   string        // default [DefaultUserAccount]
	AuthAccount   string        // default [DefaultAuthAccount]
	SystemAccount string        // default [DefaultSysAccount]
	AuthTimeout   time.Duration // authorization.timeout; default 2 s, whole seconds

	// Standalone renders a whole development config: the snippet plus
	// listen, server_name, an HTTP monitoring port and a JetStream block
	// with store_dir.
	Standalone bool
	Listen     string // host:port; default "127.0.0.1:4222"
	HTTPListen string // host:port for /healthz etc.; "" means none
	StoreDir   string // JetStream store folder; required when Standalone
	ServerName string // default "kez-dev"

	// AuthJetStream enables JetStream in the auth account, for a
	// chat-server that keeps its handle registry there (package
	// handles/jsstore, "kez-chat-server --store jetstream"). Only the
	// callout service's own login reaches that account, so no KEZ user can
	// touch the registry through NATS.
	AuthJetStream bool
	// SigServerKey, when set, is the user nkey ("U…") of a sig-server that
	// keeps sigchains in JetStream (package sigchain/jsstore,
	// "kez-sig-server --store jetstream"). The snippet gives it an account
	// of its own with JetStream (SigAccount) and lists it in auth_users, so
	// it logs in with that nkey, bypassing the callout, and no KEZ user can
	// reach the chains through NATS.
	SigServerKey string
	SigAccount   string // default [DefaultSigAccount]

	// UserMaxPayload and UserMaxSubscriptions are the user account's
	// limits (its "limits" block), which bound every user connection:
	// defaults [DefaultMaxPayload] and [DefaultMaxSubscriptions]. They
	// are what holds: nats-server does not apply the limits of a user JWT
	// an auth callout issues (it clears the JWT before it sets a
	// connection's limits), so keep them equal to [Config].MaxPayload and
	// [Config].MaxSubscriptions.
	UserMaxPayload       int64
	UserMaxSubscriptions int64
}

// AdminReplyPrefix is the inbox prefix the operator's admin login must use
// in the chat account (nats.CustomInboxPrefix, the nats CLI's
// --inbox-prefix): AdminReplyPrefix + ".>" is all it may subscribe to.
const AdminReplyPrefix = wire.AdminReplyPrefix

// ResponseThreshold is how long nats-server keeps the mapping of a
// request that crossed the chat account's service import (a consumer
// request), waiting for its answer: what one
// user's unanswered requests can hold on the server is their rate times
// this. A consumer request may wait on JetStream a few seconds.
const ResponseThreshold = 5 * time.Second

// DefaultSigAccount is the account of a sig-server with a JetStream store
// (see [ConfigOptions].SigServerKey).
const DefaultSigAccount = "SIG"

var accountName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,63}$`)

func (o ConfigOptions) withDefaults() ConfigOptions {
	if o.ChatAccount == "" {
		o.ChatAccount = DefaultChatAccount
	}
	if o.UserAccount == "" {
		o.UserAccount = DefaultUserAccount
	}
	if o.AuthAccount == "" {
		o.AuthAccount = DefaultAuthAccount
	}
	if o.SystemAccount == "" {
		o.SystemAccount = DefaultSysAccount
	}
	if o.AuthTimeout == 0 {
		o.AuthTimeout = 2 * time.Second
	}
	if o.Listen == "" {
		o.Listen = "127.0.0.1:4222"
	}
	if o.ServerName == "" {
		o.ServerName = "kez-dev"
	}
	if o.SigAccount == "" {
		o.SigAccount = DefaultSigAccount
	}
	if o.UserMaxPayload == 0 {
		o.UserMaxPayload = DefaultMaxPayload
	}
	if o.UserMaxSubscriptions == 0 {
		o.UserMaxSubscriptions = DefaultMaxSubscriptions
	}
	return o
}

// NATSConfig renders the nats.conf text that wires a server to the
// callout with keys k:
//
//	accounts {
//	  AUTH { users: [ { nkey: <service key> } ] }
//	  CHAT {
//	    jetstream: enabled
//	    users: [
//	      { nkey: <admin key>, permissions: { … } }
//	    ]
//	    exports: [
//	      { service: "kez.v1.consumer.>", accounts: [ USERS ], response_threshold: "5s" }
//	      { stream: "kez.v1.deliver.>", accounts: [ USERS ] }
//	      { stream: "_INBOX.>", accounts: [ USERS ] }
//	    ]
//	    imports: [
//	      { stream: { account: USERS, subject: "kez.v1.send.>" } }
//	      { stream: { account: USERS, subject: "kez.v1.msend.>" } }
//	      { stream: { account: USERS, subject: "kez.v1.pull.>" } }
//	      { stream: { account: USERS, subject: "kez.v1.ack.>" } }
//	    ]
//	  }
//	  USERS {
//	    limits: { max_payload: 131072, max_subs: 256 }
//	    exports: [
//	      { stream: "kez.v1.send.>", accounts: [ CHAT ] }
//	      { stream: "kez.v1.msend.>", accounts: [ CHAT ] }
//	      { stream: "kez.v1.pull.>", accounts: [ CHAT ] }
//	      { stream: "kez.v1.ack.>", accounts: [ CHAT ] }
//	    ]
//	    imports: [
//	      { service: { account: CHAT, subject: "kez.v1.consumer.>" } }
//	      { stream: { account: CHAT, subject: "kez.v1.deliver.>" } }
//	      { stream: { account: CHAT, subject: "_INBOX.>" } }
//	    ]
//	  }
//	  SYS {
//	    users: [
//	      { nkey: <system key>, permissions: { … } }
//	      { nkey: <kicker key>, permissions: { … } }
//	    ]
//	  }
//	}
//	system_account: SYS
//	authorization {
//	  timeout: 2
//	  auth_callout {
//	    issuer: <issuer key>
//	    account: AUTH
//	    auth_users: [ <service key>, <admin key>, <system key>, <kicker key> ]
//	    xkey: <xkey>
//	  }
//	}
//	jetstream: enabled
//
// Every client except the users in auth_users is then sent to the
// callout, which places users in USERS, an account without JetStream, and the
// chat-server's own key in CHAT, where the inbox stream lives. USERS
// reaches mail only through the chat-server's gate: sends, pulls and
// acknowledgements cross to it as streams (never answered on their reply
// subjects), consumer requests as a service import; answers to sends and
// what pulls deliver come back as streams. No user subject reaches
// JetStream without the gate. A service import rewrites the reply
// subject, and the server stamps every request crossing one with the account it came from (the
// Nats-Request-Info header), which the gate checks (see [Permissions] and
// docs/security.md).
//
// The user account's limits block bounds each user connection
// (o.UserMaxPayload, o.UserMaxSubscriptions): nats-server closes a
// connection that publishes more than max_payload and refuses a
// subscription over max_subs.
//
// The admin and system keys ([Keys].Admin, [Keys].System; left out when
// nil) are the operator's logins for the nats CLI. The admin user may
// publish only $JS.API.INFO, $JS.API.STREAM.NAMES and $JS.API.STREAM.LIST
// (the account's JetStream usage, the streams' sizes: "nats account info",
// "nats stream ls"), $SYS.REQ.USER.INFO and the account's own
// $SYS.REQ.ACCOUNT.PING.* reports, and receive only its replies, on
// [AdminReplyPrefix] (nats --inbox-prefix _KEZ_ADMIN): no stream message,
// subject list or consumer of the JetStream API, no KEZ subject, nothing
// addressed to a user's or the chat-server's replies. The system
// user may ask the servers for their monitoring reports
// ($SYS.REQ.SERVER.PING, $SYS.REQ.SERVER.*.* (PING or a server ID, then
// the report), $SYS.REQ.ACCOUNT.*.*: "nats server report", "nats server
// list"), except profiles, and receive only its replies: it cannot kick a
// client, reload a server or put one in lame-duck mode, use the JetStream
// system API (which could purge an account) or subscribe to the system
// account's internal traffic (which carries replicated stream data in a
// cluster). Both still see metadata: who is connected from where,
// subscription subjects, stream and consumer sizes. The kicker key
// ([Keys].Kicker, left out when nil) is the chat-server's own login in the
// system account: it may publish only $SYS.REQ.ACCOUNT.<user
// account>.CONNZ and $SYS.REQ.SERVER.*.KICK and receive only its replies
// on [KickReplyPrefix], to close a revoked device's connections.
//
// o.AuthJetStream adds "jetstream: enabled" to the AUTH account, and
// o.SigServerKey adds "SIG { jetstream: enabled, users: [ { nkey: <sig-server
// key> } ] }" and that key to auth_users: the settings of a cluster whose
// servers keep their stores in JetStream (docs/operators.md). With
// o.Standalone it renders a complete development config instead. The
// text holds public keys only. Changing the authorization block needs a
// server restart (a reload is not enough).
func NATSConfig(k *Keys, o ConfigOptions) (string, error) {
	o = o.withDefaults()
	for _, a := range []string{o.ChatAccount, o.UserAccount, o.AuthAccount, o.SystemAccount, o.SigAccount} {
		if !accountName.MatchString(a) {
			return "", fmt.Errorf("callout: account name %q: use a letter then letters, digits, '_' or '-'", a)
		}
	}
	if distinct(o.ChatAccount, o.UserAccount, o.AuthAccount, o.SystemAccount) != 4 {
		return "", fmt.Errorf("callout: the chat, user, auth and system accounts must differ")
	}
	if o.SigServerKey != "" {
		if !nkeys.IsValidPublicUserKey(o.SigServerKey) {
			return "", fmt.Errorf("callout: the sig-server key %q is not a user nkey (\"U…\"); print it with \"kez-sig-server nats-key\"", o.SigServerKey)
		}
		if distinct(o.ChatAccount, o.UserAccount, o.AuthAccount, o.SystemAccount, o.SigAccount) != 5 {
			return "", fmt.Errorf("callout: the sig-server account must differ from the chat, user, auth and system accounts")
		}
	}
	if o.UserMaxPayload < 0 || o.UserMaxPayload > math.MaxInt32 || o.UserMaxSubscriptions < 0 || o.UserMaxSubscriptions > math.MaxInt32 {
		return "", fmt.Errorf("callout: user limits %d, %d: out of range", o.UserMaxPayload, o.UserMaxSubscriptions)
	}
	if o.AuthTimeout < time.Second || o.AuthTimeout%time.Second != 0 {
		return "", fmt.Errorf("callout: auth timeout %s: use whole seconds", o.AuthTimeout)
	}
	var b strings.Builder
	if o.Standalone {
		if o.StoreDir == "" {
			return "", fmt.Errorf("callout: a standalone config needs a JetStream store folder")
		}
		fmt.Fprintf(&b, "# KEZ chat development NATS server. Not for production.\n")
		fmt.Fprintf(&b, "server_name: %s\n", strconv.Quote(o.ServerName))
		fmt.Fprintf(&b, "listen: %s\n", strconv.Quote(o.Listen))
		if o.HTTPListen != "" {
			fmt.Fprintf(&b, "http: %s\n", strconv.Quote(o.HTTPListen))
		}
		fmt.Fprintf(&b, "jetstream {\n  store_dir: %s\n}\n\n", strconv.Quote(o.StoreDir))
	}
	svc := k.ServicePublicKey()
	fmt.Fprintf(&b, "# KEZ chat: clients authenticate with their KEZ key through the auth callout.\n")
	fmt.Fprintf(&b, "accounts {\n")
	authUsers := svc
	if o.AuthJetStream {
		fmt.Fprintf(&b, "  %s { jetstream: enabled, users: [ { nkey: %s } ] }\n", o.AuthAccount, svc)
	} else {
		fmt.Fprintf(&b, "  %s { users: [ { nkey: %s } ] }\n", o.AuthAccount, svc)
	}
	// Sends, pulls and acknowledgements cross from the user account as
	// streams: nats-server stamps nothing on them and keeps no response
	// mapping. The gate acts on their subjects, which only the sender may publish to; nats-server
	// never passes a message that came through a service import (an
	// answer to a user-chosen reply included) on to a stream export, so
	// nothing but a user's own publish reaches the gate there. Answers
	// come back as a stream of the users' reply namespace, _INBOX.>: in
	// the chat account only the gate and JetStream publish there, on reply
	// subjects the gate checked are the sender's own (the chat-server's
	// own replies use another prefix). Every export names its one
	// importer.
	fmt.Fprintf(&b, "  %s {\n    jetstream: enabled\n", o.ChatAccount)
	if admin := k.AdminPublicKey(); admin != "" {
		writeUsers(&b, confUser{admin, adminPermissions})
	}
	fmt.Fprintf(&b, "    exports: [\n")
	// A request with a reply subject makes nats-server keep a response
	// mapping until the answer or the threshold (default 2 minutes);
	// requests nobody answers would pile up.
	fmt.Fprintf(&b, "      { service: %q, accounts: [ %s ], response_threshold: %q }\n", ConsumerSubjectPrefix+">", o.UserAccount, ResponseThreshold.String())
	for _, p := range []string{DeliverSubjectPrefix, wire.ReplyPrefix} {
		fmt.Fprintf(&b, "      { stream: %q, accounts: [ %s ] }\n", p+">", o.UserAccount)
	}
	fmt.Fprintf(&b, "    ]\n    imports: [\n")
	for _, p := range userStreams {
		fmt.Fprintf(&b, "      { stream: { account: %s, subject: %q } }\n", o.UserAccount, p+">")
	}
	fmt.Fprintf(&b, "    ]\n  }\n")
	// nats-server ignores a callout-issued user JWT's limits: the
	// account's are what bound a user connection.
	fmt.Fprintf(&b, "  %s {\n    limits: { max_payload: %d, max_subs: %d }\n    exports: [\n", o.UserAccount, o.UserMaxPayload, o.UserMaxSubscriptions)
	for _, p := range userStreams {
		fmt.Fprintf(&b, "      { stream: %q, accounts: [ %s ] }\n", p+">", o.ChatAccount)
	}
	fmt.Fprintf(&b, "    ]\n    imports: [\n")
	fmt.Fprintf(&b, "      { service: { account: %s, subject: %q } }\n", o.ChatAccount, ConsumerSubjectPrefix+">")
	for _, p := range []string{DeliverSubjectPrefix, wire.ReplyPrefix} {
		fmt.Fprintf(&b, "      { stream: { account: %s, subject: %q } }\n", o.ChatAccount, p+">")
	}
	fmt.Fprintf(&b, "    ]\n  }\n")
	if o.SigServerKey != "" {
		fmt.Fprintf(&b, "  %s { jetstream: enabled, users: [ { nkey: %s } ] }\n", o.SigAccount, o.SigServerKey)
		authUsers += ", " + o.SigServerKey
	}
	var sysUsers []confUser
	if sys := k.SystemPublicKey(); sys != "" {
		sysUsers = append(sysUsers, confUser{sys, systemPermissions})
	}
	if kicker := k.KickerPublicKey(); kicker != "" {
		sysUsers = append(sysUsers, confUser{kicker, kickerPermissions(o.UserAccount)})
	}
	if len(sysUsers) > 0 {
		fmt.Fprintf(&b, "  %s {\n", o.SystemAccount)
		writeUsers(&b, sysUsers...)
		fmt.Fprintf(&b, "  }\n")
	} else {
		fmt.Fprintf(&b, "  %s {}\n", o.SystemAccount)
	}
	fmt.Fprintf(&b, "}\n")
	fmt.Fprintf(&b, "system_account: %s\n", o.SystemAccount)
	fmt.Fprintf(&b, "authorization {\n")
	fmt.Fprintf(&b, "  timeout: %d\n", int(o.AuthTimeout/time.Second))
	fmt.Fprintf(&b, "  auth_callout {\n")
	fmt.Fprintf(&b, "    issuer: %s\n", k.IssuerPublicKey())
	fmt.Fprintf(&b, "    account: %s\n", o.AuthAccount)
	for _, operator := range []string{k.AdminPublicKey(), k.SystemPublicKey(), k.KickerPublicKey()} {
		if operator != "" {
			authUsers += ", " + operator
		}
	}
	fmt.Fprintf(&b, "    auth_users: [ %s ]\n", authUsers)
	fmt.Fprintf(&b, "    xkey: %s\n", k.XKeyPublicKey())
	fmt.Fprintf(&b, "  }\n")
	fmt.Fprintf(&b, "}\n")
	if !o.Standalone {
		fmt.Fprintf(&b, "# Drop the next line if this server already has a jetstream block.\n")
		fmt.Fprintf(&b, "jetstream: enabled\n")
	}
	return b.String(), nil
}

// userStreams are the subjects (prefixes, before ">") that cross from the
// user account to the gate as streams: sends (one-to-one and
// multi-recipient), pulls and acknowledgements.
var userStreams = []string{SendSubjectPrefix, MultiSendSubjectPrefix, PullSubjectPrefix, AckSubjectPrefix}

// confPermissions are a user's permissions as nats.conf writes them.
type confPermissions struct {
	pubAllow, pubDeny, subAllow, subDeny []string
}

// adminPermissions: the chat account's JetStream usage and stream sizes,
// the connection's own user and account reports; replies on its own
// prefix only, outside the users' reply namespace (_INBOX.>, which the
// chat account exports to them) and the chat-server's (_KEZ_GATE.>).
var adminPermissions = confPermissions{
	pubAllow: []string{
		"$JS.API.INFO", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST",
		"$SYS.REQ.USER.INFO", "$SYS.REQ.ACCOUNT.PING.CONNZ", "$SYS.REQ.ACCOUNT.PING.STATZ",
	},
	subAllow: []string{AdminReplyPrefix + ".>"},
}

// systemPermissions: the servers' monitoring reports, without the
// requests that act (kick, lame duck, reload) or profile; replies on
// _INBOX only, so none of the system account's internal subjects ($NRG,
// $JSC, $SYS events) and none of the JetStream system API.
var systemPermissions = confPermissions{
	pubAllow: []string{"$SYS.REQ.SERVER.PING", "$SYS.REQ.SERVER.*.*", "$SYS.REQ.ACCOUNT.*.*", "$SYS.REQ.USER.INFO"},
	pubDeny:  []string{"$SYS.REQ.SERVER.*.KICK", "$SYS.REQ.SERVER.*.LDM", "$SYS.REQ.SERVER.*.RELOAD", "$SYS.REQ.SERVER.*.PROFILEZ"},
	subAllow: []string{wire.ReplyPrefix + ">"},
}

// KickReplyPrefix is the inbox prefix of the chat-server's kicker login
// in the system account: KickReplyPrefix + ".>" is all it may subscribe
// to.
const KickReplyPrefix = wire.KickReplyPrefix

// kickerPermissions: the user account's connections on every server
// ($SYS.REQ.ACCOUNT.<users>.CONNZ, to find a revoked device's) and a
// server's kick of one connection by its ID ($SYS.REQ.SERVER.<id>.KICK);
// replies on its own prefix only. nats-server has no finer kick: the
// request names a connection ID, any connection on that server.
func kickerPermissions(userAccount string) confPermissions {
	return confPermissions{
		pubAllow: []string{"$SYS.REQ.ACCOUNT." + userAccount + ".CONNZ", "$SYS.REQ.SERVER.*.KICK"},
		subAllow: []string{KickReplyPrefix + ".>"},
	}
}

// confUser is one nkey user of an account in nats.conf.
type confUser struct {
	nkey string
	p    confPermissions
}

// writeUsers writes an account's users list.
func writeUsers(b *strings.Builder, users ...confUser) {
	fmt.Fprintf(b, "    users: [\n")
	for _, u := range users {
		fmt.Fprintf(b, "      { nkey: %s, permissions: {\n", u.nkey)
		fmt.Fprintf(b, "        publish: { %s }\n", allowDeny(u.p.pubAllow, u.p.pubDeny))
		fmt.Fprintf(b, "        subscribe: { %s }\n", allowDeny(u.p.subAllow, u.p.subDeny))
		fmt.Fprintf(b, "      } }\n")
	}
	fmt.Fprintf(b, "    ]\n")
}

// allowDeny renders "allow: [ … ]" and, if there is one, ", deny: [ … ]".
func allowDeny(allow, deny []string) string {
	quoted := func(subjects []string) string {
		q := make([]string, len(subjects))
		for i, s := range subjects {
			q[i] = strconv.Quote(s)
		}
		return "[ " + strings.Join(q, ", ") + " ]"
	}
	s := "allow: " + quoted(allow)
	if len(deny) > 0 {
		s += ", deny: " + quoted(deny)
	}
	return s
}

// distinct counts the different names among names.
func distinct(names ...string) int {
	seen := map[string]bool{}
	for _, n := range names {
		seen[n] = true
	}
	return len(seen)
}
