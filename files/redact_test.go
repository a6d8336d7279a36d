package files_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/files/format"
	"github.com/kez-lat/kez-chat/internal/testenv/redacttest"
	"github.com/kez-lat/kez-chat/kez"
)

// A sharing holds the user's identity, and a fetched private file its
// key: neither prints them.
func TestSecretsDoNotPrint(t *testing.T) {
	id, _, err := kez.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	cfg := files.Config{Client: client.Config{Identity: id, Home: t.TempDir()}}
	s, err := files.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	redacttest.Check(t, s, redacttest.Identity(id)...)
	redacttest.Check(t, cfg, redacttest.Identity(id)...)

	k, err := format.NewFileKey()
	if err != nil {
		t.Fatal(err)
	}
	got := files.Fetched{Entry: format.Entry{Name: "salary.xlsx", Size: 10, Private: true, Key: k}, Path: "/tmp/salary.xlsx"}
	redacttest.Check(t, got, redacttest.Bytes(k[:])...)
	redacttest.Check(t, &got, redacttest.Bytes(k[:])...)
	// The path is printed too (the embedded Entry alone would not say it).
	if p := strings.TrimSpace(fmtPlus(got)); !strings.HasSuffix(p, "Path:/tmp/salary.xlsx}") || !strings.Contains(p, "Key:format.FileKey(redacted)") {
		t.Errorf("%%+v of a Fetched: %s", p)
	}
}

func fmtPlus(v any) string { return fmt.Sprintf("%+v", v) }
