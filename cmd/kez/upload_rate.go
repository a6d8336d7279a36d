package main

import "github.com/kez-lat/kez-chat/internal/servercmd"

// uploadRate reads kez serve's upload cap: --max-upload-rate, else
// KEZ_MAX_UPLOAD_RATE, in bytes per second with k, M or G (binary
// multiples, as kez-relay's byte counts); 0 without either.
func (e *env) uploadRate(flagValue string) (int64, error) {
	from, v := "--max-upload-rate", flagValue
	if v == "" {
		from, v = "KEZ_MAX_UPLOAD_RATE", e.getenv("KEZ_MAX_UPLOAD_RATE")
	}
	if v == "" {
		return 0, nil
	}
	n, err := servercmd.ParseBytes(v)
	if err != nil {
		return 0, usagef("%s %s is not a rate: give bytes per second, a whole number with k, M or G for 1024, 1024², 1024³ (e.g. 2M)", from, v)
	}
	return n, nil
}
