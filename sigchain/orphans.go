package sigchain

import (
	"context"
	"time"
)

// NamedHandle returns the handle an eldest or set_handle link names: ""
// for no handle, for a release, for every other type and for a body that
// does not parse (only verified links reach a store). Stores use it to
// tell orphan chains from the others (see [OrphanCollector]).
func (l *Link) NamedHandle() string {
	var v [][]byte
	var err error
	switch l.typ {
	case TypeEldest:
		v, err = bodyFields(l.typ, l.Body(), "encryption_generation", "encryption_key", "handle", "primary_key")
		if err == nil {
			v = v[2:3]
		}
	case TypeSetHandle:
		v, err = bodyFields(l.typ, l.Body(), "handle")
	default:
		return ""
	}
	if err != nil {
		return ""
	}
	h, err := stringValue("handle", v[0])
	if err != nil {
		return ""
	}
	return h
}

// OrphanCollector is a [Store] that can delete orphan chains. A chain is
// an orphan while none of its links has ever named a handle: its eldest
// link's handle is "" and no set_handle link names one
// ([Link.NamedHandle]). A chain that named a handle once is never an
// orphan again, also after releasing it, so a contact who pinned it never
// sees it vanish. Orphans cost storage without ever being findable by a
// handle, so the sig-server deletes them some time after they were made
// (docs/spec/sigchain.md §9). sigchain/sqlitestore and sigchain/jsstore
// implement it.
type OrphanCollector interface {
	Store
	// CollectOrphans deletes every orphan chain whose eldest link was
	// stored before cutoff and returns how many it deleted. An append
	// that names a handle and a collection of the same chain never both
	// succeed: either the chain is kept with its new link, or it is
	// deleted and the append is refused as a conflict.
	CollectOrphans(ctx context.Context, cutoff time.Time) (int, error)
}
