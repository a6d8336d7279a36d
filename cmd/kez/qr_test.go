package main

import (
	"fmt"
	"image"
	"image/color"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	qrcode "github.com/piglig/go-qr"

	"github.com/kez-lat/kez-chat/sigchain"
)

// sgrRE matches the SGR escape sequences a QR line holds (or a terminal
// capture adds).
var sgrRE = regexp.MustCompile("\x1b\\[[0-9;]*m")

// modulesOfText turns the lines of a drawn QR code back into modules (dark
// true), two rows per line: the reverse of writeQR, as a reader of the
// screen sees it. Only the cells drawn on the QR code's white background
// count (a terminal capture writes the colours its own way, e.g. as two
// sequences, and resets with 39/49).
func modulesOfText(t *testing.T, lines []string) [][]bool {
	t.Helper()
	var rows [][]bool
	for _, line := range lines {
		var upper, lower []bool
		on := false
		for len(line) > 0 {
			if loc := sgrRE.FindStringIndex(line); loc != nil && loc[0] == 0 {
				seq := line[:loc[1]]
				switch {
				case strings.Contains(seq, "48;5;231"):
					on = true
				case seq == "\x1b[0m" || seq == "\x1b[m" || strings.Contains(seq, "49"):
					on = false
				}
				line = line[loc[1]:]
				continue
			}
			r, n := utf8.DecodeRuneInString(line)
			line = line[n:]
			if !on {
				continue
			}
			u, l := false, false
			switch r {
			case qrBoth:
				u, l = true, true
			case qrUpper:
				u = true
			case qrLower:
				l = true
			case qrNeither:
			default:
				t.Fatalf("a QR line holds %q", r)
			}
			upper, lower = append(upper, u), append(lower, l)
		}
		if len(upper) == 0 {
			t.Fatalf("a QR line without cells on white: %q", line)
		}
		rows = append(rows, upper, lower)
	}
	return rows
}

// decodeModules decodes modules with the library's decoder, from an image
// of them at 4 pixels a module.
func decodeModules(t *testing.T, rows [][]bool) (string, error) {
	t.Helper()
	const px = 4
	img := image.NewGray(image.Rect(0, 0, len(rows[0])*px, len(rows)*px))
	for y, row := range rows {
		if len(row) != len(rows[0]) {
			t.Fatalf("row %d has %d modules, row 0 %d", y, len(row), len(rows[0]))
		}
		for x, dark := range row {
			c := color.Gray{Y: 255}
			if dark {
				c = color.Gray{}
			}
			for dy := range px {
				for dx := range px {
					img.SetGray(x*px+dx, y*px+dy, c)
				}
			}
		}
	}
	return qrcode.Decode(img)
}

// checkQuietZone fails unless the outer qrQuietZone modules of rows are
// all light.
func checkQuietZone(t *testing.T, rows [][]bool) {
	t.Helper()
	for y, row := range rows {
		for x, dark := range row {
			inside := y >= qrQuietZone && y < len(rows)-qrQuietZone-1 && x >= qrQuietZone && x < len(row)-qrQuietZone
			if dark && !inside {
				t.Fatalf("dark module at (%d,%d) in the quiet zone of a %d×%d drawing", x, y, len(row), len(rows))
			}
		}
	}
}

// TestQRRendersTheCode: the drawn QR code, read back from its text into
// modules and decoded by the library's decoder, is the link code's URI,
// and ParseLinkCode reads that as the same code; the drawing has its
// quiet zone and two modules per character.
func TestQRRendersTheCode(t *testing.T) {
	for i, c := range []sigchain.LinkCode{{}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, {0x18, 0xd8, 0xea, 0xdd, 0x0b, 0xcd, 0x22, 0x4e, 0x06, 0x0f}} {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			var b strings.Builder
			if err := writeQR(&b, c.URI(), "    "); err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
			for _, l := range lines {
				if !strings.HasPrefix(l, "    "+qrColours) || !strings.HasSuffix(l, qrReset) {
					t.Fatalf("line not indented, coloured and reset: %q", l)
				}
			}
			rows := modulesOfText(t, lines)
			// Version 2 (25 modules) and the quiet zone, 33 wide; 17 lines
			// hold 33 rows and a light one.
			if len(lines) != 17 || len(rows[0]) != 25+2*qrQuietZone {
				t.Errorf("%d lines of %d modules, want 17 of 33", len(lines), len(rows[0]))
			}
			checkQuietZone(t, rows)
			text, err := decodeModules(t, rows)
			if err != nil {
				t.Fatalf("decoding the drawing: %v\n%s", err, sgrRE.ReplaceAllString(b.String(), ""))
			}
			if text != c.URI() {
				t.Fatalf("decoded %q, want %q", text, c.URI())
			}
			if back, err := sigchain.ParseLinkCode(text); err != nil || back != c {
				t.Fatalf("ParseLinkCode(%q) = %s, %v; want %s", text, back, err, c)
			}
		})
	}
}
