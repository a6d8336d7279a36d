// Package httpjson writes the JSON answers of KEZ's HTTP handlers (the
// sig-server's chain API, the chat-server's registry, the probes): a body
// of one JSON value and a line break, and errors as {"error": "..."}.
//
//	httpjson.Write(w, http.StatusOK, info)
//	httpjson.Error(w, http.StatusConflict, "the chain's head has moved")
//
// It has no dependencies beyond the standard library, so SDK packages that
// serve HTTP (sigchain, handles) use it without pulling in the servers'
// plumbing.
package httpjson

import (
	"encoding/json"
	"net/http"
)

// Write answers with status and v as JSON. The Content-Type is
// application/json unless the handler set another (e.g.
// application/jrd+json), and X-Content-Type-Options is nosniff. v is
// encoded before anything is sent: if it cannot be, the answer is a 500
// with an error body instead. A client that went away is not an error
// worth reporting, so Write returns nothing.
func Write(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"internal error encoding the response"}`)
	}
	h := w.Header()
	if h.Get("Content-Type") == "" {
		h.Set("Content-Type", "application/json")
	}
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// ErrorBody is the body of every error answer.
type ErrorBody struct {
	Error string `json:"error"`
}

// Error answers with status and {"error": msg}.
func Error(w http.ResponseWriter, status int, msg string) {
	Write(w, status, ErrorBody{Error: msg})
}
