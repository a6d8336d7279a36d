package main

// closeFiles stops the users' file nodes.
func (q *quick) closeFiles() error { return nil }
