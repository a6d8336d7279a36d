package stacktest

import (
	"net/http"
	"strings"
	"sync"

	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/kez"
)

// ChainFetches records the chain fetches a sig-server answers, to count
// them: start the stack with Options.WrapSigServer set to its Wrap.
type ChainFetches struct {
	mu   sync.Mutex
	gets []string // "U…?since=N"
}

// Wrap returns h recording every GET of a chain.
func (f *ChainFetches) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if key, ok := strings.CutPrefix(r.URL.Path, wire.ChainsPath); ok && r.Method == http.MethodGet {
			f.mu.Lock()
			f.gets = append(f.gets, key+"?"+r.URL.RawQuery)
			f.mu.Unlock()
		}
		h.ServeHTTP(w, r)
	})
}

// Of returns the fetches of key's chain recorded since the last call for
// key, oldest first, each as its query ("since=N").
func (f *ChainFetches) Of(key kez.PublicKey) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out, rest []string
	for _, g := range f.gets {
		if q, ok := strings.CutPrefix(g, key.String()+"?"); ok {
			out = append(out, q)
		} else {
			rest = append(rest, g)
		}
	}
	f.gets = rest
	return out
}
