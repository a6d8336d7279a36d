// Package jsstore keeps the handle registry ([handles.Store]) in the
// operator's NATS JetStream, as a key-value bucket, so that several
// chat-server replicas share one registry. It is the scale-out twin of
// [handles.OpenSQLite]: same rules, same errors, same contract tests
// (package handles/storetest).
//
//	nc, _ := nats.Connect(natsURL, ...)      // the chat-server's own credentials
//	js, _ := jetstream.New(nc)
//	reg, err := jsstore.New(ctx, js, jsstore.WithReplicas(3))
//	srv, _ := handles.NewServer(handles.ServerConfig{Store: reg, ...})
//
// New creates the bucket if it is missing (idempotently: every replica may
// call it at start) and otherwise uses the existing bucket as it is, so an
// operator may tune it (replicas, placement) with the nats CLI. The Store
// does not own the connection; close it yourself.
//
// # Layout
//
// The bucket (default [DefaultBucket], "KEZ_HANDLES") holds these keys,
// all JSON values:
//
//	name.<domain>.<skeleton>  the entry: {"v":1,"domain","name","key","enc_key",
//	                          "gen","claimed_at","updated_at","suspended"}
//	key.<U…>                  the key's index: {"v":1,"domain","name"}
//	device.<U…>               a device's record: {"v":1,"person","name","added","revoked_at"}
//	devices.<U…>              a person's devices: {"v":1,"current":[…],"revoked":[…],"primary_revoked"}
//	meta.skeleton_rule        the skeleton rule of the name keys: {"v":1,"rule":2}
//
// The skeleton is [handles.Skeleton] of the name, so look-alike names
// ("alice", "al.ice", "a1ice") share one bucket key and the KV's atomic
// create decides between them. In the domain, every byte other than a-z,
// 0-9, '-' and an inner '.' is written as '_' and two lower-case hex digits
// (a development domain "127.0.0.1:8080" becomes "127.0.0.1_3a8080").
// Times are Unix milliseconds; enc_key is base64. testdata/layout.json
// holds vectors of this layout (exact keys and values of a claim, domain
// tokens, values a reader must refuse), which the tests check.
//
// # Upgrades
//
// Skeleton rule 1 (before [handles.SkeletonVersion] 2) only dropped the
// separators, so its keys were name.<domain>.<name without . - _>. [New]
// moves every entry under such a key to its current key, once per bucket
// (meta.skeleton_rule records that it is done), with compare-and-set
// steps that replicas starting together may share. Names that rule 1 let
// in side by side but that now share a skeleton ("mallory" and
// "rnallory") cannot share a key: the first to arrive takes the current
// key, and each other stays at its rule-1 key as a twin, which the
// holder's entry lists ("twins": ["rnallory"]). Lookups try the current
// key, then the rule-1 key; a twin is renewed, suspended and released
// where it is. Releasing a name that has twins leaves its entry as the
// skeleton's lock ("released": true), which refuses new claims of the
// skeleton while a twin lives and is removed by the first claim after
// they are all gone. Stop every chat-server of an older version before
// the first one of this version opens a shared bucket: an older one
// neither finds moved entries nor sees the new look-alikes.
//
// # Consistency
//
// Every write is a compare-and-set on the key's revision (a create expects
// none). A claim writes the entry first, then the index; an entry counts
// only while its key's index points back at it, and every read checks
// both, so a claim cut short between its two writes (a crash) is never
// visible. Such a left-over entry is healed by the next claim of the same
// handle by the same key; any other key may take it over once it is older
// than the orphan grace ([WithOrphanGrace], one minute), or at once if its
// key holds another handle. Release deletes the entry, then the index; an
// index whose entry is gone is ignored and overwritten.
//
// Reads go to the bucket's stream leader (a JetStream message get), not to
// any replica (direct get): on a 3-replica bucket a direct get right after
// a write answered "not found" about 3% of the time in our tests, and
// decisions taken on stale reads would turn into spurious conflicts. A
// claim is thus visible to every chat-server replica once it returns.
//
// While a replica is down, the others keep serving; if the bucket's
// stream leader was on it, reads and writes fail for the few seconds the
// remaining nodes need to elect a new leader (Raft election timeout, 4–9 s
// in nats-server), then work again.
//
// # Views
//
// [Store.NewView] keeps a [View]: the values logins read (entries, key
// indexes, device records), decoded and stripped to what a lookup needs
// (about 450 bytes a user), in memory, kept current by a watch of the
// whole bucket. [View.LookupKey] runs the Store's own lookup rules over
// them, so a login needs no leader while the view is fresh:
//
//	view, _ := reg.NewView(ctx, jsstore.WithMaxStale(10*time.Second))
//	rec, err := view.LookupKey(ctx, key) // from memory, or from the Store
//
// Every [DefaultCheckInterval] the view reads the bucket stream's last
// sequence from its leader; once the watch has delivered that sequence,
// the view held everything stored before the read started, its freshAt.
// The view answers while now - freshAt is at most the maximum staleness
// ([WithMaxStale], [DefaultMaxStale]); past it (the watch stuck, or
// behind a flood of writes; the leader gone for longer), and before the
// first load, lookups go to the Store as without a view, and fail while
// it does. The maximum staleness is thus the bound within which a
// suspended handle or a revoked device may still be found current after
// the change was stored. A key the fresh view does not hold (registered
// a moment ago), or whose value does not decode, is looked up in the
// Store too. [View.Sync] waits until the view holds every change stored
// before the call.
package jsstore
