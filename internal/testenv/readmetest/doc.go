// Package readmetest holds the test that README.md's SDK snippet compiles
// and runs as written: it takes the Go blocks of the section "The SDK in a
// few lines", puts them verbatim into the function the README describes,
// builds that program (go build with an overlay, nothing written into the
// tree) and runs it as alice and as bob against a dev stack.
package readmetest
