package systemtest

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// rawLogin speaks the NATS client protocol by hand against addr: it reads
// INFO (and the nonce in it), sends the CONNECT that connect builds for
// that nonce, then PING, and returns the server's first answer: "PONG"
// when the login was accepted, "-ERR …" when it was refused.
func rawLogin(t testing.TB, addr string, connect func(nonce string) []byte) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(15 * time.Second))
	br := bufio.NewReader(conn)
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "INFO ") {
		t.Fatalf("no INFO: %q %v", line, err)
	}
	var info struct {
		Nonce string `json:"nonce"`
	}
	if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "INFO ")), &info); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(append(append([]byte("CONNECT "), connect(info.Nonce)...), "\r\nPING\r\n"...)); err != nil {
		return "-ERR write: " + err.Error()
	}
	for {
		line, err = br.ReadString('\n')
		if err != nil {
			return "-ERR closed: " + err.Error()
		}
		line = strings.TrimSpace(line)
		if line == "PONG" || strings.HasPrefix(line, "-ERR") {
			return line
		}
	}
}

// connectJSON is the CONNECT body of a client that logs in with an nkey.
func connectJSON(fields map[string]any) []byte {
	base := map[string]any{"verbose": false, "pedantic": false, "protocol": 1, "lang": "go", "version": "test", "name": "systemtest", "headers": true}
	for k, v := range fields {
		base[k] = v
	}
	b, _ := json.Marshal(base)
	return b
}

func sign(id *kez.Identity, nonce string) string {
	sig, err := id.SignNATSNonce([]byte(nonce))
	if err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(sig)
}

// TestLoginMatrix: every way a client might try to log in to the
// operator's NATS as someone it is not, or without being registered, is
// refused by the auth callout (the broker answers "Authorization
// Violation"); the registered key with its own fresh signature is the
// only row let in. Each row is one real login against a nats-server
// process configured with the chat-server's snippet.
func TestLoginMatrix(t *testing.T) {
	sys := startSystem(t, sysOptions{})
	alice := sys.register(t, "alice")
	sys.register(t, "suspended")
	sys.register(t, "revoked")
	ctx := testCtx(t, 30*time.Second)
	reg := sys.chats[0].Store()
	if err := reg.SetSuspended(ctx, sys.userHandle("suspended"), true); err != nil {
		t.Fatal(err)
	}
	if err := reg.Release(ctx, sys.userHandle("revoked")); err != nil {
		t.Fatal(err)
	}
	mallory := stacktest.Identity("mallory") // never registered
	addr := strings.TrimPrefix(sys.natsURL, "nats://")

	// A signature alice made for an earlier connection, captured on the wire.
	var oldNonce, oldSig string
	if got := rawLogin(t, addr, func(nonce string) []byte {
		oldNonce, oldSig = nonce, sign(alice.id, nonce)
		return connectJSON(map[string]any{"nkey": alice.key.String(), "sig": oldSig})
	}); got != "PONG" {
		t.Fatalf("alice's own login: %s", got)
	}
	acct, _ := nkeys.CreateAccount()
	acctPub, _ := acct.PublicKey()
	foreignJWT := func() string {
		uc := jwt.NewUserClaims(alice.key.String())
		tok, err := uc.Encode(acct)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}()

	rows := []struct {
		name    string
		connect func(nonce string) []byte
		accept  bool
	}{
		{"registered key, its own fresh signature (control)", func(n string) []byte {
			return connectJSON(map[string]any{"nkey": alice.key.String(), "sig": sign(alice.id, n)})
		}, true},
		{"forged: alice's key, mallory's signature", func(n string) []byte {
			return connectJSON(map[string]any{"nkey": alice.key.String(), "sig": sign(mallory, n)})
		}, false},
		{"replayed: alice's signature over an earlier nonce", func(n string) []byte {
			if n == oldNonce {
				t.Fatal("the server sent the same nonce twice")
			}
			return connectJSON(map[string]any{"nkey": alice.key.String(), "sig": oldSig})
		}, false},
		{"missing signature", func(n string) []byte {
			return connectJSON(map[string]any{"nkey": alice.key.String()})
		}, false},
		{"signature not base64", func(n string) []byte {
			return connectJSON(map[string]any{"nkey": alice.key.String(), "sig": "!!not base64!!"})
		}, false},
		{"signature over the nonce with a suffix", func(n string) []byte {
			return connectJSON(map[string]any{"nkey": alice.key.String(), "sig": sign(alice.id, n+"x")})
		}, false},
		{"unknown key (never registered)", func(n string) []byte {
			return connectJSON(map[string]any{"nkey": mallory.PublicKey().String(), "sig": sign(mallory, n)})
		}, false},
		{"revoked key (handle released)", func(n string) []byte {
			id := stacktest.Identity("revoked")
			return connectJSON(map[string]any{"nkey": id.PublicKey().String(), "sig": sign(id, n)})
		}, false},
		{"suspended key", func(n string) []byte {
			id := stacktest.Identity("suspended")
			return connectJSON(map[string]any{"nkey": id.PublicKey().String(), "sig": sign(id, n)})
		}, false},
		{"account key instead of a user key", func(n string) []byte {
			sig, _ := acct.Sign([]byte(n))
			return connectJSON(map[string]any{"nkey": acctPub, "sig": base64.RawURLEncoding.EncodeToString(sig)})
		}, false},
		{"malformed nkey", func(n string) []byte {
			return connectJSON(map[string]any{"nkey": "UNOTAKEY", "sig": sign(alice.id, n)})
		}, false},
		{"alice's own signature plus a foreign user JWT (the broker drops the JWT)", func(n string) []byte {
			return connectJSON(map[string]any{"jwt": foreignJWT, "nkey": alice.key.String(), "sig": sign(alice.id, n)})
		}, true},
		{"wrong issuer: a user JWT from a foreign account, no nkey", func(n string) []byte {
			return connectJSON(map[string]any{"jwt": foreignJWT, "sig": sign(alice.id, n)})
		}, false},
		{"user and password", func(n string) []byte {
			return connectJSON(map[string]any{"user": "alice", "pass": "secret"})
		}, false},
		{"token", func(n string) []byte {
			return connectJSON(map[string]any{"auth_token": alice.key.String()})
		}, false},
		{"no credentials", func(n string) []byte { return connectJSON(nil) }, false},
		{"the callout service's own key, without its seed", func(n string) []byte {
			keys := sys.chats[0].Keys()
			return connectJSON(map[string]any{"nkey": keys.ServicePublicKey(), "sig": sign(mallory, n)})
		}, false},
		{"oversized CONNECT (8 KiB client name)", func(n string) []byte {
			return connectJSON(map[string]any{"nkey": alice.key.String(), "sig": sign(alice.id, n), "name": strings.Repeat("n", 8<<10)})
		}, false},
		{"malformed CONNECT JSON", func(n string) []byte { return []byte(`{"nkey":`) }, false},
	}
	refused := 0
	for _, row := range rows {
		got := rawLogin(t, addr, row.connect)
		ok := got == "PONG"
		t.Logf("%-55s → %s", row.name, got)
		if ok != row.accept {
			t.Errorf("%s: %s", row.name, got)
		}
		if !ok {
			refused++
		}
	}
	t.Logf("login matrix: %d rows, %d refused, %d accepted (alice with her own fresh signature)", len(rows), refused, len(rows)-refused)
}

// userHandle is the handle of a registered name.
func (s *system) userHandle(name string) handles.Handle {
	return handles.Handle{Name: name, Domain: domain}
}
