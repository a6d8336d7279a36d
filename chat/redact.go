package chat

import (
	"fmt"
	"io"
	"log/slog"
)

// A Client and an Opener hold the user's private keys: they print as
// "chat.Client(<public key>)" and "chat.Opener(<public key>)" for every
// verb and in logs, never their key material.

// String returns "chat.Client(<the user's key>)".
func (c *Client) String() string { return "chat.Client(" + c.me.String() + ")" }

// GoString is String, for %#v.
func (c *Client) GoString() string { return c.String() }

// Format prints String for every verb.
func (c *Client) Format(f fmt.State, _ rune) { io.WriteString(f, c.String()) }

// LogValue logs String.
func (c *Client) LogValue() slog.Value { return slog.StringValue(c.String()) }

// String returns "chat.Opener(<the recipient's key>)".
func (o *Opener) String() string { return "chat.Opener(" + o.me.String() + ")" }

// GoString is String, for %#v.
func (o *Opener) GoString() string { return o.String() }

// Format prints String for every verb.
func (o *Opener) Format(f fmt.State, _ rune) { io.WriteString(f, o.String()) }

// LogValue logs String.
func (o *Opener) LogValue() slog.Value { return slog.StringValue(o.String()) }
