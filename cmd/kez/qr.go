package main

import (
	"fmt"
	"io"
	"strings"

	qrcode "github.com/piglig/go-qr"
)

// The link code's QR code, drawn in the terminal. The encoding (segments,
// Reed–Solomon error correction, versions, masks) is the go-qr library's;
// this file only draws its modules as text.

// qrQuietZone is the light margin around a QR code, in modules: 4 is what
// the standard asks for, and what scanners need to find the code.
const qrQuietZone = 4

// Colours of the QR code as SGR parameters: black on white from the
// 256-colour cube (16 is #000000, 231 is #ffffff), which terminal themes
// do not redefine, so the code is dark on light in light and dark
// terminals alike. Each line ends with a reset.
const (
	qrColours = "\x1b[38;5;16;48;5;231m"
	qrReset   = "\x1b[0m"
)

// The four characters of a half-block QR code: each holds two modules, the
// upper one in its top half (dark: the foreground colour).
const (
	qrBoth    = '█' // both dark
	qrUpper   = '▀' // upper dark
	qrLower   = '▄' // lower dark
	qrNeither = ' '
)

// qrModules encodes text as a QR code (error-correction level M, or higher
// when it fits the same size) and returns its modules row by row, dark
// true, with the quiet zone around them.
func qrModules(text string) ([][]bool, error) {
	q, err := qrcode.EncodeText(text, qrcode.Medium)
	if err != nil {
		return nil, fmt.Errorf("%q could not be drawn as a QR code (%w); --no-qr leaves it out", text, err)
	}
	n := q.Size() + 2*qrQuietZone
	rows := make([][]bool, n)
	for y := range rows {
		rows[y] = make([]bool, n)
		for x := range rows[y] {
			rows[y][x] = q.Module(x-qrQuietZone, y-qrQuietZone) // false outside the code
		}
	}
	return rows, nil
}

// writeQR draws a QR code of text on w with Unicode half blocks, two rows
// of modules per line, each line indented by indent and coloured black on
// white. A last odd row gets a light row below it (more quiet zone).
func writeQR(w io.Writer, text, indent string) error {
	rows, err := qrModules(text)
	if err != nil {
		return err
	}
	var b strings.Builder
	for y := 0; y < len(rows); y += 2 {
		b.WriteString(indent)
		b.WriteString(qrColours)
		for x := range rows[y] {
			upper, lower := rows[y][x], y+1 < len(rows) && rows[y+1][x]
			switch {
			case upper && lower:
				b.WriteRune(qrBoth)
			case upper:
				b.WriteRune(qrUpper)
			case lower:
				b.WriteRune(qrLower)
			default:
				b.WriteRune(qrNeither)
			}
		}
		b.WriteString(qrReset)
		b.WriteByte('\n')
	}
	_, err = io.WriteString(w, b.String())
	return err
}
