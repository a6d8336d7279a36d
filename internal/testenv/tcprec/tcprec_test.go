package tcprec_test

import (
	"bytes"
	"errors"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/kez-lat/kez-chat/internal/testenv/tcprec"
	"github.com/nats-io/nats.go"
)

// A NATS client talking to a real nats-server through the proxy: every
// message it publishes (with and without headers and reply subjects) and
// every one delivered to it is parsed out of the recording, in order and
// byte for byte, and a mark splits the recording between two publishes.
func TestNATSThroughProxy(t *testing.T) {
	srv := natstest.Run(t, "")
	rec := tcprec.Start(t, strings.TrimPrefix(srv.ClientURL(), "nats://"))
	nc, err := nats.Connect("nats://" + rec.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	sub, err := nc.SubscribeSync("rec.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 8192) // 128 KiB: many reads
	hm := nats.NewMsg("rec.h")
	hm.Header.Set("Kez-Test", "1")
	hm.Data = []byte("with a header\r\nand CRLF inside")
	hm.Reply = "rec.reply"
	send := func(m *nats.Msg) {
		t.Helper()
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
		if _, err := sub.NextMsg(10 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	send(&nats.Msg{Subject: "rec.a", Data: []byte("first")})
	mark := rec.Mark()
	send(hm)
	send(&nats.Msg{Subject: "rec.big", Data: big})
	send(&nats.Msg{Subject: "rec.empty"})

	msgs, err := rec.NATSMessages()
	if err != nil {
		t.Fatal(err)
	}
	type frame struct {
		op, subject, reply, payload string
		dir                         tcprec.Dir
		header, before              bool
	}
	var got []frame
	for _, m := range msgs {
		got = append(got, frame{m.Op, m.Subject, m.Reply, string(m.Payload), m.Dir, m.Header != nil, m.Before(mark)})
		if m.Header != nil && !bytes.Contains(m.Header, []byte("Kez-Test: 1")) {
			t.Errorf("%s %s: header %q", m.Op, m.Subject, m.Header)
		}
	}
	want := []frame{
		{"PUB", "rec.a", "", "first", tcprec.Up, false, true},
		{"MSG", "rec.a", "", "first", tcprec.Down, false, true},
		{"HPUB", "rec.h", "rec.reply", string(hm.Data), tcprec.Up, true, false},
		{"HMSG", "rec.h", "rec.reply", string(hm.Data), tcprec.Down, true, false},
		{"PUB", "rec.big", "", string(big), tcprec.Up, false, false},
		{"MSG", "rec.big", "", string(big), tcprec.Down, false, false},
		{"PUB", "rec.empty", "", "", tcprec.Up, false, false},
		{"MSG", "rec.empty", "", "", tcprec.Down, false, false},
	}
	if !slices.Equal(got, want) {
		for _, f := range got {
			t.Logf("%s %s %q %d bytes %s header=%v before=%v", f.op, f.subject, f.reply, len(f.payload), f.dir, f.header, f.before)
		}
		t.Fatal("the frames parsed out of the recording differ")
	}
	if n := len(rec.Chunks()); n < 4 {
		t.Errorf("%d chunks for 128 KiB each way", n)
	}
	if !bytes.Contains(rec.Bytes(), big) {
		t.Error("Bytes does not hold the big payload")
	}
}

// A connection to a target that is down is closed; the proxy stays up.
func TestTargetDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	rec := tcprec.Start(t, dead)
	for range 2 {
		c, err := net.Dial("tcp", rec.Addr())
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("read from a proxied connection to nowhere: %d, %v", n, err)
		}
		c.Close()
	}
	if len(rec.Chunks()) != 0 {
		t.Error("recorded bytes of a connection that went nowhere")
	}
}

func TestParseNATS(t *testing.T) {
	in := "INFO {\"server_id\":\"x\"}\r\nPING\r\nCONNECT {}\r\nSUB a 1\r\n" +
		"MSG a 1 5\r\nhello\r\nHMSG a.b 1 _INBOX.x 12 14\r\nNATS/1.0\r\n\r\nhi\r\n+OK\r\n-ERR 'x'\r\n" +
		"PUB c 0\r\n\r\nMSG cut 1 10\r\nabc"
	msgs, n, err := tcprec.ParseNATS([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if n != strings.Index(in, "MSG cut") || len(msgs) != 3 {
		t.Fatalf("consumed %d, %d frames", n, len(msgs))
	}
	if m := msgs[1]; m.Op != "HMSG" || m.Subject != "a.b" || m.Reply != "_INBOX.x" || string(m.Header) != "NATS/1.0\r\n\r\n" || string(m.Payload) != "hi" {
		t.Errorf("HMSG: %+v", m)
	}
	if m := msgs[2]; m.Op != "PUB" || len(m.Payload) != 0 || string(m.Encode()) != "PUB c 0\r\n\r\n" {
		t.Errorf("PUB: %+v", m)
	}
	for _, bad := range []string{
		"GARBAGE\r\n",
		"\r\n",
		"MSG a 1 3\r\nabcXY",
		"MSG a 1 x\r\n",
		"HPUB a 5 3\r\nabc\r\n",
		"PUB a b c d\r\n",
		"MSG a 1 -1\r\n",
	} {
		if _, _, err := tcprec.ParseNATS([]byte(bad)); !errors.Is(err, tcprec.ErrNotNATS) {
			t.Errorf("%q: %v, want ErrNotNATS", bad, err)
		}
	}
}

// FuzzParseNATS: ParseNATS never panics, consumes at most its input, and
// each frame it returns, encoded again, parses to itself.
func FuzzParseNATS(f *testing.F) {
	for _, s := range []string{
		"PUB a 5\r\nhello\r\n",
		"HPUB a r 12 14\r\nNATS/1.0\r\n\r\nhi\r\n",
		"MSG a 1 r 2\r\nhi\r\nPING\r\n",
		"HMSG a 1 12 12\r\nNATS/1.0\r\n\r\n\r\n",
		"INFO {}\r\nMSG a 1 10\r\nabc",
		"pub a 1\r\nx\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		msgs, n, err := tcprec.ParseNATS(b)
		if n < 0 || n > len(b) {
			t.Fatalf("consumed %d of %d", n, len(b))
		}
		if err != nil && !errors.Is(err, tcprec.ErrNotNATS) {
			t.Fatalf("error %v", err)
		}
		for _, m := range msgs {
			again, k, err := tcprec.ParseNATS(m.Encode())
			if err != nil || len(again) != 1 || k != len(m.Encode()) {
				t.Fatalf("%q encoded as %q: %d frames, %v", b, m.Encode(), len(again), err)
			}
			a := again[0]
			if a.Op != m.Op || a.Subject != m.Subject || a.Reply != m.Reply || !bytes.Equal(a.Header, m.Header) || !bytes.Equal(a.Payload, m.Payload) {
				t.Fatalf("%+v encoded and parsed is %+v", m, a)
			}
		}
	})
}
