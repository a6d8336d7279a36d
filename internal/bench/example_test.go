package bench_test

import (
	"context"
	"log"
	"os"

	"github.com/kez-lat/kez-chat/internal/bench"
)

// A quick run against a stack of its own, printed as a table.
func Example() {
	ctx := context.Background()
	dir, err := bench.TempDir()
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	st, err := bench.StartStack(ctx, bench.StackConfig{Dir: dir})
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
	cfg := bench.Quick()
	cfg.Croc, cfg.CrocSkip = bench.FindCroc()
	rep, err := bench.Run(ctx, st, cfg)
	if err != nil {
		log.Fatal(err)
	}
	rep.WriteTable(os.Stdout)
}
