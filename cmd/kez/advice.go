package main

import (
	"errors"
	"io/fs"
	"syscall"

	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/natsconn"
	"github.com/kez-lat/kez-chat/sigchain"
)

// sdkAdvice says what to do about an SDK error, in the CLI's terms (its
// commands, flags and environment variables), or "" if the error's own
// words are enough. The SDK states what happened without advice; the CLI
// adds it once, here.
func sdkAdvice(err error) string {
	var off *files.OfflineError
	var ns *files.NotSharedError
	switch {
	case errors.As(err, &off) && off.Waited > 0:
		return "ask them to run kez serve"
	case errors.As(err, &off):
		return "ask them to run kez serve, or use --wait"
	case errors.As(err, &ns) && ns.Owner == "":
		return "list yours with kez files"
	case errors.As(err, &ns):
		return "list them with kez files " + ns.Owner
	case errors.Is(err, natsconn.ErrNotRegistered):
		return "register a handle first (kez register NAME), or ask the operator whether the chat server is running"
	case errors.Is(err, natsconn.ErrUnreachable):
		return "check NATS_URL and that the server is running"
	case errors.Is(err, files.ErrNoNATS):
		return "set NATS_URL (signalling between peers goes through the broker)"
	case errors.Is(err, files.ErrNoSigServer):
		return "set KEZ_SIG_SERVER to the sig-server that holds your sigchain"
	case errors.Is(err, files.ErrNoResolver):
		return "set KEZ_SERVER to your chat-server, which looks up handles"
	}
	return ""
}

// chatAdvice is sdkAdvice, and for a state folder chat.Open cannot write
// to, where to put it instead.
func chatAdvice(err error) string {
	switch {
	case errors.Is(err, syscall.EROFS):
		return "set KEZ_HOME to a writable folder"
	case errors.Is(err, fs.ErrPermission):
		return "fix its permissions or set KEZ_HOME"
	}
	return sdkAdvice(err)
}

// filesAdvice is sdkAdvice, and for a user without a sigchain (the only
// sigchain.ErrNotFound package files returns), to register.
func filesAdvice(err error) string {
	if errors.Is(err, sigchain.ErrNotFound) {
		return "register first (kez register NAME)"
	}
	return sdkAdvice(err)
}

// withAdvice appends advice, if any, to msg.
func withAdvice(msg, advice string) string {
	if advice != "" {
		return msg + "; " + advice
	}
	return msg
}
