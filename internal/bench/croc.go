package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// FindCroc returns the croc binary on PATH, or "" and why croc cannot be
// measured. croc runs in a private network namespace (unshare -n) where
// only loopback exists: even with its own relay, croc looks up its public
// relays' names when it starts, and that must not leave the machine.
func FindCroc() (path, why string) {
	path, err := exec.LookPath("croc")
	if err != nil {
		return "", "croc is not on PATH (go install github.com/schollz/croc/v10@v10.7.0)"
	}
	for _, tool := range []string{"unshare", "ip", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			return "", tool + " is not on PATH; croc runs in a private network namespace"
		}
	}
	if out, err := exec.Command("unshare", "-n", "true").CombinedOutput(); err != nil {
		return "", "cannot make a private network namespace for croc (unshare -n: " + strings.TrimSpace(string(out)) + ")"
	}
	return path, ""
}

// crocScript runs a croc relay, sender and receiver inside the namespace
// and prints the receiver's wall time.
const crocScript = `set -u
ip link set lo up || exit 3
cd "$WORK"
"$CROC" --ignore-stdin relay --host 127.0.0.1 >relay.log 2>&1 &
relay=$!
sender=
trap 'kill $relay $sender 2>/dev/null; wait 2>/dev/null' EXIT
for i in $(seq 400); do (echo >/dev/tcp/127.0.0.1/9009) 2>/dev/null && break; sleep 0.05; done
"$CROC" --yes --ignore-stdin --relay 127.0.0.1:9009 send --no-local "$SRC" >send.log 2>&1 &
sender=$!
start=$(date +%s%N)
if ! "$CROC" --yes --overwrite --ignore-stdin --ip 127.0.0.1:9009 --out "$OUT" >recv.log 2>&1; then
  echo "the croc receiver failed:"; tail -c 600 recv.log; echo; tail -c 600 send.log; exit 4
fi
end=$(date +%s%N)
echo "elapsed_ns=$((end-start))"
`

// runCroc sends src (size bytes) with croc through its own relay and
// returns the receiver's wall time.
func runCroc(ctx context.Context, croc, src string, size int64, dir string) (time.Duration, error) {
	work, err := os.MkdirTemp(dir, "croc-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(work)
	out := filepath.Join(work, "out")
	if err := os.MkdirAll(filepath.Join(work, "home"), 0o700); err != nil {
		return 0, err
	}
	if err := os.MkdirAll(out, 0o700); err != nil {
		return 0, err
	}
	secret := make([]byte, 8)
	rand.Read(secret)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "-n", "bash", "-c", crocScript)
	cmd.Env = append(os.Environ(),
		"WORK="+work, "CROC="+croc, "SRC="+src, "OUT="+out,
		"HOME="+filepath.Join(work, "home"), "CROC_SECRET=kez-bench-"+hex.EncodeToString(secret))
	b, err := cmd.CombinedOutput()
	text := strings.TrimSpace(string(b))
	if err != nil {
		return 0, fmt.Errorf("%v: %s", err, text)
	}
	i := strings.LastIndex(text, "elapsed_ns=")
	if i < 0 {
		return 0, fmt.Errorf("no timing in croc's output: %s", text)
	}
	ns, err := strconv.ParseInt(strings.TrimSpace(text[i+len("elapsed_ns="):]), 10, 64)
	if err != nil {
		return 0, err
	}
	st, err := os.Stat(filepath.Join(out, filepath.Base(src)))
	if err != nil {
		return 0, fmt.Errorf("croc did not write the file: %w", err)
	}
	if st.Size() != size {
		return 0, fmt.Errorf("croc wrote %d of %d bytes", st.Size(), size)
	}
	return time.Duration(ns), nil
}
