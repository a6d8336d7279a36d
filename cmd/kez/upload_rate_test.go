package main

import (
	"strings"
	"testing"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
)

// kez serve --max-upload-rate (or KEZ_MAX_UPLOAD_RATE) reaches the node
// that serves the files, which says so; a value that is not a rate is a
// usage error naming where it came from.
func TestServeMaxUploadRate(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{nil, []string{"serve", "--max-upload-rate", "fast"}, "--max-upload-rate fast is not a rate"},
		{nil, []string{"serve", "--max-upload-rate", "-1"}, "--max-upload-rate -1 is not a rate"},
		{map[string]string{"KEZ_MAX_UPLOAD_RATE": "2X"}, []string{"serve"}, "KEZ_MAX_UPLOAD_RATE 2X is not a rate"},
	} {
		if r := kezCmd(t, c.env, "", c.args...); r.code != 2 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("kez %v: exit %d\n%s", c.args, r.code, r.stderr)
		}
	}

	st := stacktest.Start(t, stacktest.Options{})
	alice := with(st.Env(st.NewUser(t, "alice")), "KEZ_P2P_LISTEN", "/ip4/127.0.0.1/tcp/0", "KEZ_RELAYS", "none")
	for _, c := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{alice, []string{"serve", "--max-upload-rate", "2M"}, "Sending your files at 2.0 MiB/s at most."},
		{with(alice, "KEZ_MAX_UPLOAD_RATE", "512k"), []string{"serve"}, "Sending your files at 512.0 KiB/s at most."},
		{with(alice, "KEZ_MAX_UPLOAD_RATE", "512k"), []string{"serve", "--max-upload-rate", "1G"}, "Sending your files at 1.0 GiB/s at most."},
	} {
		out, errw := newWatchWriter(c.want), newWatchWriter()
		stop, wait := background(t, c.env, out, errw, c.args...)
		out.await(t, c.want)
		stop()
		if code := wait(); code != 0 {
			t.Errorf("kez %v: exit %d\n%s", c.args, code, errw.String())
		}
	}
	out, errw := newWatchWriter("Serving "), newWatchWriter()
	stop, wait := background(t, alice, out, errw, "serve")
	out.await(t, "Serving ")
	stop()
	if code := wait(); code != 0 || strings.Contains(out.String(), "Sending your files at") {
		t.Errorf("kez serve without a cap: exit %d\n%s", code, out.String())
	}
}
