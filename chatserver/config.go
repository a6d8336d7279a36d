package chatserver

import (
	"fmt"

	"github.com/kez-lat/kez-chat/callout"
)

// NATSConfig returns the nats.conf text for the callout keys in keysDir,
// creating the keys there first if the folder holds none (see
// [callout.LoadOrCreateKeys]). It is what "kez-chat-server nats-config"
// prints: with the zero [callout.ConfigOptions], the snippet an operator
// adds to their server; with Standalone, a whole development config. A
// [Server] with the same KeysDir is the callout that config trusts.
func NATSConfig(keysDir string, o callout.ConfigOptions) (string, error) {
	if keysDir == "" {
		keysDir = DefaultKeysDir
	}
	keys, err := callout.LoadOrCreateKeys(keysDir)
	if err != nil {
		return "", fmt.Errorf("chatserver: the callout keys in %s: %w", keysDir, err)
	}
	return callout.NATSConfig(keys, o)
}
