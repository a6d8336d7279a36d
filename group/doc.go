// Package group is a group conversation's membership chain: who is in a
// group NAME@domain, with which role, and since when.
//
// Like a person's sigchain ([github.com/kez-lat/kez-chat/sigchain]), the
// membership chain is an append-only list of signed links, each naming the
// previous one by its ID. The first link ([TypeCreate]) makes its signer
// the owner; later links add and remove members ([TypeAdd], [TypeRemove]),
// change a role ([TypeRole]) or the title ([TypeTitle]). Only the owner and
// admins may change membership, and a member removed signs nothing valid
// afterwards. Every client verifies the whole chain itself with [Verify]
// (or [State.Extend] from a state it holds) and keeps a [Pin] of the head
// it saw, so a server that rewrites or shortens the chain is caught
// ([State.CheckPin]: [ErrFork], [ErrRollback]).
//
// Links are signed by the acting person's primary key or by one of that
// person's devices; whether a device key belonged to the person when it
// signed is a question for the person's sigchain, which the caller
// answers with a [DeviceChecker] ([ChainDeviceChecker] builds one from
// verified sigchains).
//
// The format, the rules and test vectors are in docs/spec/group.md.
package group
