package httpjson

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestWrite(t *testing.T) {
	rec := httptest.NewRecorder()
	Write(rec, http.StatusCreated, map[string]int{"seqno": 3})
	if rec.Code != http.StatusCreated || rec.Body.String() != "{\"seqno\":3}\n" ||
		rec.Header().Get("Content-Type") != "application/json" || rec.Header().Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("got %d %q %v", rec.Code, rec.Body.String(), rec.Header())
	}

	// A content type the handler chose is kept.
	rec = httptest.NewRecorder()
	rec.Header().Set("Content-Type", "application/jrd+json")
	Write(rec, http.StatusOK, struct{}{})
	if ct := rec.Header().Get("Content-Type"); ct != "application/jrd+json" {
		t.Errorf("content type %q", ct)
	}

	// What cannot be encoded becomes a 500 with an error body, not half
	// an answer.
	rec = httptest.NewRecorder()
	Write(rec, http.StatusOK, map[string]any{"f": func() {}})
	if rec.Code != http.StatusInternalServerError || rec.Body.String() != "{\"error\":\"internal error encoding the response\"}\n" {
		t.Errorf("unencodable: %d %q", rec.Code, rec.Body.String())
	}
}

func TestError(t *testing.T) {
	rec := httptest.NewRecorder()
	Error(rec, http.StatusConflict, `the head "moved"`)
	if rec.Code != http.StatusConflict || rec.Body.String() != "{\"error\":\"the head \\\"moved\\\"\"}\n" {
		t.Errorf("got %d %q", rec.Code, rec.Body.String())
	}
}
