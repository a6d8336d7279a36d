package logserver_test

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/translog"
	"github.com/kez-lat/kez-chat/translog/logserver"
	"github.com/multiformats/go-multihash"
)

// A sig-server's log: open it with a key made on first use, append the
// entry of a link, and check the inclusion proof a chain GET would carry
// as a client does, with the key /v1/info names.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "kez-log")
	defer os.RemoveAll(dir)

	signer, _, err := logserver.LoadOrCreateKey(filepath.Join(dir, "log.key"), "example.com/sigchain-log")
	if err != nil {
		panic(err)
	}
	lg, err := logserver.Open(ctx, logserver.Config{Dir: dir, Signer: signer,
		CheckpointInterval: logserver.MinCheckpointInterval, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		panic(err)
	}
	defer lg.Close(ctx)

	seed := sha256.Sum256([]byte("example key"))
	key, _ := kez.PublicKeyFromEd25519(ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey))
	mh, _ := multihash.Sum([]byte("example link"), multihash.SHA2_256, -1)
	e := translog.Entry{Key: key, Seqno: 1, ID: cid.NewCidV1(cid.Raw, mh).String()}
	if _, err := lg.Append(ctx, e); err != nil {
		panic(err)
	}

	p, err := lg.Proof(ctx, key, 1)
	if err != nil {
		panic(err)
	}
	cp, err := translog.ParseCheckpoint([]byte(p.Checkpoint), lg.Info().Key)
	if err != nil {
		panic(err)
	}
	hashes, _ := translog.DecodeHashes(p.Proof)
	fmt.Println("origin:", cp.Origin)
	fmt.Println("entry", p.Index, "of", cp.Size, "verified:", translog.VerifyInclusion(e, p.Index, hashes, cp) == nil)
	// Output:
	// origin: example.com/sigchain-log
	// entry 0 of 1 verified: true
}
