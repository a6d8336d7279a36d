package chat

// The client's counters (Client.Stats).

import "sync/atomic"

// Stats are counters of what a client did since it was opened.
type Stats struct {
	Sent             uint64 // messages the stream acknowledged
	Received         uint64 // new messages stored (any trust)
	Duplicates       uint64 // deliveries of messages already stored, dropped
	Rejected         uint64 // deliveries that failed to open or verify, dropped
	Held             uint64 // new messages stored as held
	Requests         uint64 // new messages stored as requests
	ReceiptsSent     uint64 // delivery receipts sent
	ReceiptsReceived uint64 // receipts received, of any status
	// ReadReceiptsSent counts read receipts sent (docs/spec/chat.md §4.1).
	ReadReceiptsSent uint64
	Flagged          uint64 // contacts flagged
	// RequestsDropped counts requests over a cap (Config.MaxRequests…),
	// dropped without being stored.
	RequestsDropped uint64
	// StrangerLookups counts lookups of strangers' handles done, of which
	// StrangerLookupsFailed failed (a server down, slow, or refused by the
	// remote-origin rules); StrangerLookupsSkipped counts senders not looked
	// up because StrangerQueue senders were already waiting.
	StrangerLookups        uint64
	StrangerLookupsFailed  uint64
	StrangerLookupsSkipped uint64
	// Undecryptable counts deliveries dropped because this client had no
	// session (or prekey) to open them with (see Config.OnSessionReset);
	// they are not in Rejected. Downgrades counts format v1 envelopes
	// refused from peers with an established session (ErrDowngrade); they
	// are in Rejected too.
	Undecryptable uint64
	Downgrades    uint64
	// SessionResets counts new sessions this client started because
	// messages could not be decrypted; Resent counts messages sent again
	// because a peer started a new session (it lost its state) before
	// their receipt came.
	SessionResets uint64
	Resent        uint64
	// CopiesDue counts copies of messages this client could not seal to
	// one of their devices when they were sent (the device's prekey could
	// not be had) and recorded as due; DueSent counts copies due it sealed
	// and published later; DueDropped counts copies due it dropped (their
	// device revoked, too old, over a bound). See [Client.SendDueCopies].
	CopiesDue  uint64
	DueSent    uint64
	DueDropped uint64
	// GroupStale counts group messages refused for a stale epoch (one a
	// removal came after, ErrStaleEpoch); GroupHeld counts group messages
	// held for a key or a fresher chain; GroupKeysRefused counts group
	// keys refused (not a member's, naming another device, malformed).
	GroupStale       uint64
	GroupHeld        uint64
	GroupKeysRefused uint64
	// GroupInvitations counts groups pinned as invitations (the user was
	// added by someone who is no contact; those over the request caps are
	// in RequestsDropped); GroupUpdatesDeferred counts group-updates whose
	// fetch waited for Config.GroupUpdateInterval.
	GroupInvitations     uint64
	GroupUpdatesDeferred uint64
	// LogViewsSent counts log views sent to contacts; LogViews counts
	// contacts' log views checked, LogViewsDropped those dropped (more
	// than one per contact per minute, or from someone who is no
	// contact); SplitViews counts split views recorded (docs/spec/chat.md
	// §11).
	LogViewsSent    uint64
	LogViews        uint64
	LogViewsDropped uint64
	SplitViews      uint64
	// Blocked counts deliveries from blocked persons and keys, dropped
	// without being stored ([Client.Block]).
	Blocked uint64
}

type clientStats struct {
	sent, received, duplicates, rejected, held, requests, receiptsSent, receiptsReceived, flagged atomic.Uint64
	requestsDropped, lookups, lookupsFailed, lookupsSkipped                                       atomic.Uint64
	undecryptable, downgrades, sessionResets, resent                                              atomic.Uint64
	copiesDue, dueSent, dueDropped                                                                atomic.Uint64
	groupStale, groupHeld, groupKeysRefused                                                       atomic.Uint64
	groupInvitations, groupUpdatesDeferred                                                        atomic.Uint64
	logViewsSent, logViews, logViewsDropped, splitViews                                           atomic.Uint64
	blocked, readReceiptsSent                                                                     atomic.Uint64
}

// Stats returns the counters so far.
func (c *Client) Stats() Stats {
	s := &c.stats
	return Stats{
		Sent: s.sent.Load(), Received: s.received.Load(), Duplicates: s.duplicates.Load(), Rejected: s.rejected.Load(),
		Held: s.held.Load(), Requests: s.requests.Load(), ReceiptsSent: s.receiptsSent.Load(),
		ReceiptsReceived: s.receiptsReceived.Load(), Flagged: s.flagged.Load(),
		RequestsDropped: s.requestsDropped.Load(), StrangerLookups: s.lookups.Load(),
		StrangerLookupsFailed: s.lookupsFailed.Load(), StrangerLookupsSkipped: s.lookupsSkipped.Load(),
		Undecryptable: s.undecryptable.Load(), Downgrades: s.downgrades.Load(),
		SessionResets: s.sessionResets.Load(), Resent: s.resent.Load(),
		CopiesDue: s.copiesDue.Load(), DueSent: s.dueSent.Load(), DueDropped: s.dueDropped.Load(),
		GroupStale: s.groupStale.Load(), GroupHeld: s.groupHeld.Load(), GroupKeysRefused: s.groupKeysRefused.Load(),
		GroupInvitations: s.groupInvitations.Load(), GroupUpdatesDeferred: s.groupUpdatesDeferred.Load(),
		LogViewsSent: s.logViewsSent.Load(), LogViews: s.logViews.Load(), LogViewsDropped: s.logViewsDropped.Load(),
		SplitViews: s.splitViews.Load(), Blocked: s.blocked.Load(), ReadReceiptsSent: s.readReceiptsSent.Load(),
	}
}
