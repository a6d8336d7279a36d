package chat

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/kez-lat/kez-chat/kez"
)

// ReceiptEvent is a receipt that changed messages this client sent
// (Config.OnReceipt): Peer, the recipient person, says Status for IDs.
type ReceiptEvent struct {
	Peer   kez.PublicKey // the person who sent the receipt: the messages' recipient
	Status string        // ReceiptDelivered or ReceiptRead
	IDs    []MessageID   // the sent messages whose DeliveredAt or ReadAt it set
}

// queueReadReceipts sends read receipts for es (trusted text messages of
// contacts just marked read) in the background, unless the user turned
// them off or the client is offline.
func (c *Client) queueReadReceipts(es []*Entry) {
	if len(es) == 0 || c.cfg.NoReadReceipts || c.nc == nil {
		return
	}
	c.background(func(ctx context.Context) {
		// A block recorded by another client of the state folder counts.
		if err := c.loadBlocked(ctx); err != nil {
			c.log.Warn("could not read the blocked keys; using those read before", "err", err)
		}
		c.sendReceiptsOf(ctx, ReceiptRead, es)
	})
}

// applyReceiptTx applies rc, signed by person at sentAt (Unix ms), to the
// messages this client sent to person (docs/spec/chat.md §4): it sets
// delivered_at, and for a read receipt read_at, where unset. It returns
// the IDs whose row it changed.
func (c *Client) applyReceiptTx(tx *sql.Tx, rc *Receipt, person kez.PublicKey, sentAt int64) ([]MessageID, error) {
	setDelivered := tx.Stmt(c.db.stmts.delivered)
	var changed []MessageID
	for _, id := range rc.IDs {
		res, err := setDelivered.Exec(sentAt, c.me.String(), id[:], person.String())
		if err != nil {
			return nil, fmt.Errorf("chat: applying a receipt: %w", err)
		}
		n, _ := res.RowsAffected()
		if rc.Status == ReceiptRead {
			res, err := tx.Exec(`UPDATE messages SET read_at = ? WHERE from_key = ? AND id = ? AND to_key = ? AND incoming = 0 AND read_at IS NULL`,
				sentAt, c.me.String(), id[:], person.String())
			if err != nil {
				return nil, fmt.Errorf("chat: applying a receipt: %w", err)
			}
			m, _ := res.RowsAffected()
			n += m
		}
		if n > 0 {
			changed = append(changed, id)
		}
	}
	return changed, nil
}

// tellReceipt calls Config.OnReceipt for a stored receipt that changed
// messages.
func (c *Client) tellReceipt(person kez.PublicKey, status string, changed []MessageID) {
	if c.cfg.OnReceipt == nil || len(changed) == 0 {
		return
	}
	c.cfg.OnReceipt(ReceiptEvent{Peer: person, Status: status, IDs: changed})
}
