package devstack

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// module is the module path ModuleDir looks for.
const module = "github.com/kez-lat/kez-chat"

// ErrNoModule: the working folder is not inside the kez-chat module.
var ErrNoModule = errors.New("devstack: not inside the kez-chat module")

// ModuleDir returns the folder of the kez-chat module that holds the
// working folder, where [Build] builds the servers to run as processes.
func ModuleDir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if f, err := os.Open(filepath.Join(dir, "go.mod")); err == nil {
			sc := bufio.NewScanner(f)
			sc.Scan()
			f.Close()
			if strings.TrimSpace(sc.Text()) == "module "+module {
				return dir, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", ErrNoModule
		}
		dir = parent
	}
}

// Build builds the programs pkgs of the module in moduleDir (such as
// "./cmd/kez-chat-server") into outDir with "go build", each binary named
// after its package's folder.
func Build(ctx context.Context, moduleDir, outDir string, pkgs ...string) error {
	cmd := exec.CommandContext(ctx, "go", append([]string{"build", "-o", outDir + string(filepath.Separator)}, pkgs...)...)
	cmd.Dir = moduleDir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("devstack: go build %s: %w\n%s", strings.Join(pkgs, " "), err, out)
	}
	return nil
}
