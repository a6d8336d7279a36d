//go:build !unix

package main

// uiLogFlags: no O_NOFOLLOW here; openUILog refuses a link it finds.
const uiLogFlags = 0
