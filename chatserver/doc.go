// Package chatserver is the KEZ chat-server as a library: the handle
// registry over HTTP (claim, lookup, WebFinger) and the NATS auth callout
// that lets registered keys log in to the operator's NATS, in one value.
//
// An embedding program fills in a [Server] and makes one call, the shape
// of tailscale's tsnet:
//
//	srv := &chatserver.Server{
//		Domain:       "kez.lat",
//		SigServerURL: "https://sig.kez.lat",
//		NATSURL:      "nats://127.0.0.1:4222",
//		DBPath:       "/var/lib/kez/chat.db",
//		KeysDir:      "/var/lib/kez/keys",
//	}
//	if err := srv.Start(ctx); err != nil { … }
//	defer srv.Close()
//	http.ListenAndServe(":8080", srv.Handler())
//
// Start opens the registry (SQLite by default), loads or creates the callout keys,
// and then, in the background, logs in to NATS as the callout service
// user, answers authorization requests in a queue group (so replicas share
// them) with the registry as the directory of keys, logs in as the
// provisioner, creates or updates the JetStream inbox stream and runs the
// gate: the only way users reach the stream. Users live in an account
// without JetStream; the gate takes their sends, pulls and
// acknowledgements (which cross to it as streams, on subjects only the
// sender may publish to) and consumer requests (a service import), never
// acts on a reply subject a user chose, and holds every user to
// [MailLimits] (docs/security.md, "Tenant isolation"). NATS may
// come up after the chat-server: the server keeps trying, and /readyz
// says what it is waiting for (the server also logs it, within a second
// of starting and whenever it changes). [Server.WaitReady] blocks until
// it is ready.
//
// Several replicas on several machines share one registry with
// StoreBackend [StoreJetStream]: the registry then lives in a JetStream
// key-value bucket of the callout account (package handles/jsstore) and
// opens once the callout service is logged in. Logins (the callout and
// the gate) then read a [jsstore.View] of it kept in memory, so that they
// go on while the bucket's stream elects a leader, within
// [Server].RegistryMaxStale.
//
// The NATS side needs the nats.conf snippet that [NATSConfig] renders from
// the same keys folder (the reference binary prints it with
// "kez-chat-server nats-config"); docs/operators.md explains each line.
//
// Handler serves, besides /healthz, /readyz and Prometheus /metrics:
//
//	POST /v1/handles                      claim a handle (package handles)
//	GET  /v1/handles/{name}               look one up
//	GET  /.well-known/webfinger           RFC 7033 lookup (OPTIONS: its CORS preflight)
//	GET  /v1/info                         {"domain","sig_server"}: what a client needs to register
//
// [RegistryDirectory] adapts any handles.Store to the callout's directory,
// for programs that assemble the parts themselves.
//
// The package does not run a NATS server, store sigchains (that is the
// sig-server, package sigchain), or see message contents.
package chatserver
