// Package chat is KEZ chat's end-to-end encrypted messaging: the messaging
// client most programs use, and underneath it the sealed envelope that
// travels through the broker.
//
// # The client
//
// Call [Open] with a [Config] (the identity, a state folder, and the NATS,
// chat-server and sig-server addresses) and Close the [Client] when done
// ([Client.Shutdown] lets the sends and receipts under way finish first).
// Then:
//
//   - [Client.AddContact] resolves a handle, verifies the key's sigchain
//     and pins the key, chain head and encryption key; [Client.VerifyContact]
//     marks it verified once the safety number ([kez.SafetyNumber]) or the
//     fingerprint was compared in person.
//   - [Client.Send] seals a message in a session with a contact's pinned
//     key, stores it and publishes it to their inbox on JetStream,
//     returning once the stream stored it ([WaitReceipt] also waits for
//     their delivery receipt); [Client.SendAsync] keeps many sends in
//     flight. A message sent while NATS (or the stream, after a
//     reconnect) cannot be reached stays pending and is published once
//     the connection is back; a caller that stops waiting first gets an
//     error wrapping [ErrQueued]. Only a refusal (a *[QuotaError],
//     [ErrUnknownRecipient], …) fails a message.
//   - [Client.Sync] fetches what waited while offline; [Client.Inbox] lists
//     what is new, once; [Client.Run] receives live and calls a handler.
//     Every message is opened, verified against the sender the broker
//     vouches for, stored in the history (SQLite, chat.db in the state
//     folder) and only then acknowledged, so nothing is lost and nothing is
//     shown twice.
//   - [Client.History], [Client.Requests] (messages from keys that are not
//     contacts) and [Client.Held] (from contacts whose key or chain changed)
//     read the history. [Client.AcceptRequest] makes a requester a contact
//     under the handle the registry confirmed for its key.
//   - [Client.AcceptKey] accepts a flagged contact's change (below) at the
//     key whose safety number the user compared, and at no other.
//   - [Client.MarkRead] marks what was shown read and sends the contacts
//     who sent it a read receipt (unless Config.NoReadReceipts; never to a
//     stranger); their receipts set Entry.DeliveredAt and Entry.ReadAt of
//     what the user sent them, and Config.OnReceipt hears of each.
//   - [Client.Block] drops everything a person sends, unstored, and
//     refuses sends to them ([ErrBlocked]); [Client.Unblock] lifts it.
//     Blocking is local: nobody is told.
//
// # The conversation list and paging
//
// [Client.Conversations] is what a messenger's sidebar shows: a
// [Conversation] per contact, per key whose messages are requests (never
// merged with a contact's row, whatever handle it claims) and per group,
// with its newest message, the received messages not yet marked read
// ([Client.MarkRead]), the contact's flag and verification and the
// messages held because of the flag; the newest conversation first.
// [ReadConversations] reads the same list from the state folder without
// a client (read-only: no identity, no server, chat.db neither created
// nor migrated), so a UI can draw its first screen at once. [Client.Page]
// reads a conversation a page at a time, back from the newest message
// ([PageQuery.Before]: the first message of the page shown), without gaps
// or repeats whatever the send times; it reads chat.db only, never
// waiting on the network (the senders of group messages stored by key
// are named in the background, for a later page).
//
// A contact whose handle later names another key, or whose sigchain the
// sig-server rewrites, is flagged: sending fails with a *[KeyChangedError]
// or *[ChainRewrittenError], their messages are held, and accepting the
// new key ([Client.AcceptKey], the key the flag names: pinned only if the
// handle still names it) or adding the contact again (whatever key the
// handle names when it runs) accepts the change. The wire rules, the receipt body and
// the pinning rules are in docs/spec/chat.md.
//
// # Sessions
//
// Messages between two clients travel in sessions (package session,
// docs/spec/session.md: a post-quantum hybrid handshake to the
// recipient's signed prekey, then a Double Ratchet; envelope format 2).
// The client makes, publishes and rotates the device's prekey, keeps the
// session states in chat.db and updates them in the transaction that
// stores the message they sealed or opened, before a sent message is
// published or a received one acknowledged; a replaced state, and a
// prekey deleted by the rotation, leave chat.db's files within about a
// second unless another connection holds an older read snapshot
// (secure_delete, and the write-ahead log truncated once writes pause),
// so a copy of the files opens nothing sent before. A format 1 envelope (below)
// from a peer with an established session is refused ([ErrDowngrade]); a
// peer that publishes no prekey yet is sent format 1. Messages this
// client cannot decrypt because it lost its state ([ErrUnknownSession])
// are reported ([SessionReset]) and make it start a new session, and the
// sender sends again what got no receipt. The rules are in
// docs/spec/chat.md §7.
//
// # The envelope (format 1)
//
// [Seal] signs a [Message] with the sender's identity (any [kez.Signer])
// and encrypts it to the recipient's X25519 key (HPKE, RFC 9180;
// DHKEM(X25519), HKDF-SHA256, ChaCha20-Poly1305); an [Opener] (or
// [OpenEnvelope]) decrypts and verifies it, and every failure wraps a
// sentinel error such as [ErrDecrypt] or [ErrBadSignature]. The broker sees
// only the two keys it routes by and ciphertext, and a signed message
// cannot be re-wrapped to someone else. The format and its test vectors are
// in docs/spec/envelope.md. The envelope layer remembers nothing: replay
// protection, pinning and history are the client's.
//
// [Connect] is the NATS login with a KEZ identity, for programs that use
// the broker directly.
//
// The package does not move files (package files), run servers (chatserver,
// sigchain) or choose where state lives: the caller passes the folder.
package chat
