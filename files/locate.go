package files

import "github.com/kez-lat/kez-chat/files/internal/signal"

// ErrOwnerOffline reports an owner whose client did not answer a locate
// request: it is not running kez serve (or an embedding program's
// [Sharing.Serve]). It is returned as an *[OfflineError].
var ErrOwnerOffline = signal.ErrOwnerOffline

// OfflineError is [ErrOwnerOffline] with who was asked: Owner (their
// handle, or `alice@kez.lat's device "laptop"` when the entry is served
// by a device other than their primary key) and, for a waiting fetch,
// Waited (how long). It matches
// [ErrOwnerOffline] with errors.Is.
type OfflineError = signal.OfflineError

// LocateOptions adjust [Sharing.Locate]. The zero value asks once and
// waits the Config's LocateTimeout for the answer. OwnerName names the
// owner in errors; Timeout bounds the wait for one answer; Wait keeps
// asking, with pauses of at most MaxWaitInterval, until the owner answers
// or ctx ends, calling OnWait after each unanswered request; Now is the
// clock for request and answer times.
type LocateOptions = signal.LocateOptions
