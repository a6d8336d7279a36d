//go:build !linux

package systemtest

import "fmt"

func childMain(mode string) int {
	fmt.Printf("{\"mode\":%q,\"fatal\":\"child processes are Linux-only\"}\n", mode)
	return 0
}
