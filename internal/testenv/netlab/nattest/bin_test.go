package nattest

// removeBinaries deletes the binaries the kez tests built (from TestMain).
func removeBinaries() {}
