package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"

	"edgegw/gateway/batch"
)

// decodeLimit bounds what decode inflates: a batch is at most 16 MiB
// (batch_bytes' maximum), so more is not one of ours.
const decodeLimit = 16 << 20

// cmdDecode prints the readings of one message read from stdin, one JSON
// object a line: a batch (plain, gzip or zstd) or a reading published alone.
func cmdDecode(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("decode", flag.ContinueOnError)
	fs.SetOutput(stderr)
	enc := fs.String("encoding", "auto", "the message's content-encoding user property: none, gzip, zstd, or auto (from the bytes)")
	if fs.Parse(args) != nil || fs.NArg() != 0 {
		if fs.NArg() != 0 {
			fmt.Fprintln(stderr, "edgegw decode: the message is read from stdin; no arguments")
		}
		return exitFailure
	}
	msg, err := io.ReadAll(io.LimitReader(stdin, decodeLimit+1))
	if err != nil {
		fmt.Fprintf(stderr, "edgegw decode: reading stdin: %v\n", err)
		return exitFailure
	}
	e, err := messageEncoding(*enc, msg)
	if err != nil {
		fmt.Fprintf(stderr, "edgegw decode: %v\n", err)
		return exitFailure
	}
	doc, err := batch.Decompress(msg, e, decodeLimit)
	if err != nil {
		fmt.Fprintf(stderr, "edgegw decode: %v\n", err)
		return exitFailure
	}
	readings, err := batch.Readings(doc)
	if err != nil {
		fmt.Fprintf(stderr, "edgegw decode: %v\n", err)
		return exitFailure
	}
	w := bufio.NewWriter(stdout)
	for _, r := range readings {
		_, _ = w.Write(r)
		_ = w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		fmt.Fprintf(stderr, "edgegw decode: %v\n", err)
		return exitFailure
	}
	return exitOK
}

// messageEncoding is the encoding the -encoding flag names, or with
// "auto" the one the message's first bytes show: tools such as
// mosquitto_sub print the payload without its properties.
func messageEncoding(flagValue string, msg []byte) (batch.Encoding, error) {
	if flagValue != "auto" {
		return batch.ParseEncoding(flagValue)
	}
	return batch.Sniff(msg), nil
}
