package files_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/kez-lat/kez-chat/files"
)

// The example ticket of docs/spec/ticket.md, read at 2026-01-01: who owns
// the file, what it is and where to fetch it; read after its expiry, it
// is refused.
func ExampleParseTicket() {
	const text = "kezt1nnsxu5abacfgnzwehpqwk7ts6epqgmrcc57slh2uc346zoxpp5faiti6ljjmlctg43cdxylfpzzpchydgirbo7zft5kbn6pmxlxx6sqejupfuuwfe4a6fvwbaejcb4bn2wsl62pwz57eumu3ij6efxkzi2yvaze7gala7qrm26nhcu2eaaaaaaaaasj6aaaaaaagsxxtqaew433umvzs45dyoqjwq5duobztulzponuwoltlmv5c43dboqbaqbgaaabacbqpuefqjqaaaiazcaqpuhgqg4tf7iewctyircnqughonshndfhxv5tt4yvqlajalodofkqhwcwczviemc7e4clq2fzunk35zuhgwvnti343hqzcxczjai262rdypadq"
	t, err := files.ParseTicket(text, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(t.Name, t.Size, t.Private)
	fmt.Println(t.Owner)
	fmt.Println(t.Expires.Format(time.RFC3339))
	fmt.Println(t.Addrs)

	_, err = files.ParseTicket(text, time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC))
	fmt.Println(errors.Is(err, files.ErrTicketExpired), err)
	// Output:
	// notes.txt 300000 false
	// UCFGNZWEHPQWK7TS6EPQGMRCC57SLH2UC346ZOXPP5FAITI6LJJMLL5M
	// 2026-01-08T00:00:00Z
	// [/ip4/192.0.2.1/tcp/4001 /ip4/192.0.2.1/udp/4001/quic-v1]
	// true files: the ticket expired on 2026-01-08T00:00:00Z
}
