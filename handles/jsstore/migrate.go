package jsstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/kez-lat/kez-chat/handles"
)

// ruleKey holds the skeleton rule the bucket's name keys follow:
// {"v":1,"rule":N}, N a [handles.SkeletonVersion]. A bucket without it
// was written under rule 1.
const ruleKey = "meta.skeleton_rule"

type ruleValue struct {
	V    int `json:"v"`
	Rule int `json:"rule"`
}

// migrate brings the bucket's name keys to the current skeleton rule, once
// (ruleKey records it): every entry whose key an older rule computed moves
// to its current key, or, if another name holds that key already, stays
// where it is as a twin that the holder lists. It is safe to run from
// several replicas at once and to cut short: every step is a
// compare-and-set, and the next New finishes the work.
func (s *Store) migrate(ctx context.Context) error {
	cur, err := s.get(ctx, ruleKey)
	if err != nil {
		return err
	}
	if cur.found {
		var r ruleValue
		if err := decodeValue(cur.value, &r, &r.V); err != nil {
			return fmt.Errorf("jsstore: the value of %s is unreadable: %w", ruleKey, err)
		}
		switch {
		case r.Rule == handles.SkeletonVersion:
			return nil
		case r.Rule > handles.SkeletonVersion:
			return fmt.Errorf("jsstore: %w (rule %d; this program knows %d)", handles.ErrNewerSkeletonRule, r.Rule, handles.SkeletonVersion)
		}
	}
	lister, err := s.kv.ListKeysFiltered(ctx, "name.>")
	if err != nil {
		return fmt.Errorf("jsstore: listing the bucket's names: %w", err)
	}
	var stale []string
	for k := range lister.Keys() {
		if sk := k[strings.LastIndexByte(k, '.')+1:]; handles.Skeleton(sk) != sk {
			stale = append(stale, k)
		}
	}
	if err := ctx.Err(); err != nil { // the list stops short when ctx ends
		return fmt.Errorf("jsstore: listing the bucket's names: %w", err)
	}
	for _, k := range stale {
		if err := s.moveEntry(ctx, k); err != nil {
			return err
		}
	}
	b, _ := json.Marshal(ruleValue{V: formatVersion, Rule: handles.SkeletonVersion})
	if _, err := s.put(ctx, ruleKey, b, cur.rev); err != nil && !errors.Is(err, errConflict) {
		return err // a conflict: another replica finished first
	}
	return nil
}

// moveEntry moves the entry at k, a key of an older skeleton rule, to its
// current key; if another name holds that, the entry stays at k as a twin
// and the holder lists its name.
func (s *Store) moveEntry(ctx context.Context, k string) error {
	for range maxAttempts {
		old, err := s.get(ctx, k)
		if err != nil || !old.found {
			return err
		}
		e, err := decodeEntry(old.value)
		if err != nil {
			return nil // not ours to read: leave it to the operator
		}
		lk, err := legacyKey(e.handle())
		if err != nil || lk != k {
			return nil // not where rule 1 put this name: leave it
		}
		nk, err := nameKey(e.handle())
		if err != nil || nk == k {
			return err
		}
		cur, err := s.get(ctx, nk)
		if err != nil {
			return err
		}
		if cur.found {
			held, err := decodeEntry(cur.value)
			if err != nil {
				return nil // the current key is unreadable: e stays, still found at k
			}
			if held.handle() != e.handle() {
				// Another name has the skeleton: e is its twin.
				if slices.Contains(held.Twins, e.Name) || len(held.Twins) >= maxTwins {
					return nil
				}
				held.Twins = append(held.Twins, e.Name)
				if _, err := s.put(ctx, nk, held.encode(), cur.rev); errors.Is(err, errConflict) {
					continue
				} else {
					return err
				}
			}
			if held.key != e.key {
				return nil // the same name by another key: leave both to the operator
			}
			// An earlier move copied e; copy it again if e changed since.
			e.Twins = held.Twins
		}
		if !cur.found || string(cur.value) != string(e.encode()) {
			if _, err := s.put(ctx, nk, e.encode(), cur.rev); errors.Is(err, errConflict) {
				continue
			} else if err != nil {
				return err
			}
		}
		if err := s.del(ctx, k, old.rev); errors.Is(err, errConflict) {
			continue // e changed meanwhile: copy it again
		} else if err != nil {
			return err
		}
		return nil
	}
	return ErrContention
}
