package chat

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/kez-lat/kez-chat/kez"
)

// metaDevice names the device key a state folder's chat.db was last
// opened with.
const metaDevice = "device"

// adoptDevice makes chat.db the state of device dev of person me. A state
// folder whose install became another device ("kez recover --force" makes
// a new device key in place; "kez init --force" another identity) keeps
// its history and contacts, which are the person's, but nothing that was
// the old device's own: its prekeys (the new device publishes its own),
// its sessions and what they left due (undecryptable counts, resends),
// and the envelopes it sealed and never published, which no other login
// may publish. Those sent messages' copies become due (copies_due), so the
// new device seals them afresh from the history; the other envelopes
// (receipts, resets, sync messages) are dropped. All in one transaction.
func (s *store) adoptDevice(ctx context.Context, dev, me kez.PublicKey) (changed bool, err error) {
	was, err := s.getMeta(ctx, metaDevice)
	if err != nil {
		return false, err
	}
	if was == dev.String() {
		return false, nil
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		if was == "" {
			// A chat.db from before devices: the device was the one
			// whose prekeys it keeps (if any).
			keys, err := s.loadPrekeys(tx)
			if err != nil {
				return err
			}
			for _, k := range keys {
				if k.Public.Owner != dev {
					was, changed = k.Public.Owner.String(), true
					break
				}
			}
		} else {
			changed = true
		}
		if changed {
			// The sent messages' copies, to the recipient's devices
			// (counts = 1) and to the user's other devices.
			if _, err := tx.Exec(`INSERT INTO copies_due (msg_id, device, person, counts, created_at, attempts, next_at)
				SELECT o.msg_id, o.device, CASE WHEN o.counts = 1 THEN m.to_key ELSE ? END, o.counts, o.created_at, 0, 0
				FROM outbox o JOIN messages m ON m.id = o.msg_id AND m.from_key = ? AND m.incoming = 0
				WHERE o.device <> ?
				ON CONFLICT (msg_id, device) DO NOTHING`, me.String(), me.String(), dev.String()); err != nil {
				return err
			}
			for _, q := range []string{
				`DELETE FROM outbox`,
				`DELETE FROM prekeys`,
				`DELETE FROM sessions`,
				`DELETE FROM undecryptable`,
				`DELETE FROM resend_due`,
				`DELETE FROM meta WHERE name = '` + metaPrekeyPublished + `'`,
			} {
				if _, err := tx.Exec(q); err != nil {
					return err
				}
			}
		}
		_, err := tx.Exec(`INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value`,
			metaDevice, dev.String())
		return err
	})
	if err != nil {
		return false, fmt.Errorf("chat: database: taking the state folder over for device %s: %w", dev, err)
	}
	return changed, nil
}
