package stacktest

import "github.com/kez-lat/kez-chat/internal/testenv/exampletb"

// ForExample starts a stack for a testable example, which has no
// *testing.T, and registers the named users on it as [Stack.NewUser]
// does; stop shuts everything down and removes its folders. A failure
// panics, which fails the example with the message.
//
//	st, users, stop := stacktest.ForExample(stacktest.Options{}, "alice", "bob")
//	defer stop()
func ForExample(o Options, users ...string) (st *Stack, us []*User, stop func()) {
	tb := exampletb.New()
	defer func() {
		if r := recover(); r != nil {
			tb.Close()
			panic(r)
		}
	}()
	st = Start(tb, o)
	for _, name := range users {
		us = append(us, st.NewUser(tb, name))
	}
	return st, us, tb.Close
}
