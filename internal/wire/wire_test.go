package wire

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The names this package owns, as they would appear in a string literal
// that spells one by hand.
var owned = []string{"kez.v1.", "_INBOX.", Stream, "/v1/chains", "/v1/prekeys", InfoPath, GroupsPath}

// TestNamesHaveOneOwner fails when a package other than this one spells a
// wire name in a string literal of its (non-test) code: every such name
// is defined here once and used from here. Sentences (literals with a
// space: help texts, messages) may mention them.
func TestNamesHaveOneOwner(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("the module root is not two folders up: %v", err)
	}
	self, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || path == self) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		checked++
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			v, err := strconv.Unquote(lit.Value)
			if err != nil || strings.Contains(v, " ") {
				return true // prose (a description, a message) may name them
			}
			for _, name := range owned {
				if strings.Contains(v, name) {
					rel, _ := filepath.Rel(root, fset.Position(lit.Pos()).Filename)
					t.Errorf("%s:%d spells %q in %s; use package wire's name", rel, fset.Position(lit.Pos()).Line, name, lit.Value)
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 100 {
		t.Fatalf("checked only %d files; is the walk looking at the module?", checked)
	}
}

func TestReplyInbox(t *testing.T) {
	if got := ReplyInbox("UABC"); got != "_INBOX.UABC" {
		t.Errorf("ReplyInbox = %q", got)
	}
}

// The vectors of docs/spec/chat.md §1 (Kez-Devices on a send): the keys
// are sorted before hashing, so their order does not matter.
func TestDevicesDigest(t *testing.T) {
	const p, d = "UBTQFKB5TOBFFKQVSNQUQKGMKBNPRTZ2L2FSANF7IHKP223KGWCTNYAW", "UDFITYLFE5QKMYSQLLTIQYTKWEQFVSEF5TQVZNW4IN7PRIWK27QGI6SH"
	for _, c := range []struct {
		keys []string
		want string
	}{
		{[]string{p}, "226c69a2f66e50a4"},
		{[]string{p, d}, "04c183bc9e0635aa"},
		{[]string{d, p}, "04c183bc9e0635aa"},
	} {
		if got := DevicesDigest(c.keys); got != c.want {
			t.Errorf("DevicesDigest(%q) = %s, want %s", c.keys, got, c.want)
		}
	}
	keys := []string{d, p}
	DevicesDigest(keys)
	if keys[0] != d {
		t.Error("DevicesDigest sorted its argument")
	}
}
