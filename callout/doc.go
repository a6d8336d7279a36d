// Package callout is the NATS auth callout service of a KEZ chat server:
// it lets users log in to NATS with nothing but their KEZ key and gives
// each one only the subjects that are theirs.
//
// An operator runs their own nats-server. [LoadOrCreateKeys] makes (once)
// and loads the callout's keys; [NATSConfig] renders the nats.conf snippet
// that sends every login to the callout. Then:
//
//	svc, _ := callout.New(callout.Config{Keys: keys, Directory: dir})
//	nc, _ := nats.Connect(url, keys.ServiceOptions()...)
//	svc.Listen(nc)      // answers $SYS.REQ.USER.AUTH in a queue group
//	defer svc.Close()
//
// For each login the service opens the sealed request, checks it came from
// the server, looks the key the client claims up in a [Directory] (the
// handle registry, or a [StaticDirectory]), verifies the client's
// signature over the server's nonce with that key ([VerifyNonce];
// nats-server does not, in callout mode), runs an optional [Authorizer],
// and answers with a
// user JWT valid for [Config.TTL] that places the user in the chat account
// under their handle with [Permissions]. Everything else is denied; if no
// service answers, the server denies after its auth timeout (fail closed).
// Under a flood of bogus logins the service answers keys that logged in
// before from the same address first, refuses unregistered keys before
// verifying any signature, slows down addresses that keep failing, and
// sums denials up in one log line a minute ([LoginLimits], [Stats]).
//
// [ProvisionInbox] creates the one JetStream stream that holds every
// inbox, through a connection made with [Keys.ProvisionerOptions].
//
// Clients connect with chat.Connect. The package does not register
// handles, run a NATS server, or see message contents.
package callout
