package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"edgegw/gateway"
	"edgegw/gateway/status"
)

// exitPointFailed is edgegw poll's exit code when a point was not read.
const exitPointFailed = 3

// cmdPoll reads every device (or one) now, count times, and prints what it
// read: for commissioning, without the buffer or MQTT.
func cmdPoll(args []string, stdout, stderr io.Writer) int {
	fs, path := configFlags("poll", stderr)
	device := fs.String("device", "", "poll only this device")
	count := fs.Int("count", 1, "rounds of polls")
	interval := fs.Duration("interval", time.Second, "time between rounds")
	cfg, code := parseAndLoad(fs, path, args, stderr)
	if cfg == nil {
		return code
	}
	if *count < 1 || *interval < 0 {
		fmt.Fprintln(stderr, "edgegw poll: -count must be at least 1 and -interval not negative")
		return exitFailure
	}
	s, err := gateway.OpenPollSession(cfg, *device, slog.New(slog.DiscardHandler))
	if errors.Is(err, gateway.ErrNoSuchDevice) {
		fmt.Fprintf(stderr, "edgegw poll: %v\n", err)
		return exitConfig
	}
	if err != nil {
		fmt.Fprintf(stderr, "edgegw poll: %v\n", err)
		return exitFailure
	}
	defer s.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	failed := false
	var before []status.Bus
	for round := 1; round <= *count && ctx.Err() == nil; round++ {
		if round > 1 {
			select {
			case <-ctx.Done():
				continue
			case <-time.After(*interval):
			}
			fmt.Fprintln(stdout)
		}
		devices, buses := s.Round(ctx)
		if *count > 1 {
			fmt.Fprintf(stdout, "== round %d of %d, %s\n", round, *count, time.Now().Format("15:04:05.000"))
		}
		for i := range devices {
			failed = printDevice(stdout, &devices[i], round > 1) || failed
		}
		for i, b := range buses {
			if i < len(before) { // this round's traffic
				b.Requests -= before[i].Requests
				b.Errors -= before[i].Errors
				b.WireTime -= before[i].WireTime
			}
			fmt.Fprintf(stdout, "bus %s (%s): %d requests, %d failed, %s on the wire\n", b.Name, b.Protocol, b.Requests, b.Errors, roundDuration(b.WireTime))
		}
		before = buses
	}
	if failed {
		return exitPointFailed
	}
	return exitOK
}

// printDevice prints a device's table and reports whether a point failed;
// changes shows what changed since the round before.
func printDevice(w io.Writer, d *status.Device, changes bool) bool {
	state := "answering"
	if !d.FailingSince.IsZero() {
		state = "not answering"
	}
	fmt.Fprintf(w, "%s (bus %s): %s, poll took %s\n", d.Name, d.Bus, state, roundDuration(d.PollTook))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	head := "  point\tvalue\traw (hex)\terror"
	if changes {
		head = "  point\tvalue\tchange\traw (hex)\terror"
	}
	fmt.Fprintln(tw, head)
	failed := false
	for _, p := range d.Points {
		value := "-"
		if p.Value != "" && p.Error == "" {
			value = strings.TrimSpace(p.Value + " " + p.Unit)
		}
		failed = failed || p.Error != ""
		raw := p.Raw
		if raw == "" || p.Error != "" {
			raw = "-"
		}
		cols := []string{"  " + p.Name, value}
		if changes {
			cols = append(cols, change(p))
		}
		cols = append(cols, raw, p.Error)
		fmt.Fprintln(tw, strings.Join(cols, "\t"))
	}
	_ = tw.Flush() // w is the terminal or a buffer
	return failed
}

// change says how a point changed since the round before.
func change(p status.Point) string {
	switch {
	case p.Error != "" || p.Previous == "":
		return ""
	case p.Previous == p.Value:
		return "="
	}
	v, err1 := strconv.ParseFloat(p.Value, 64)
	prev, err2 := strconv.ParseFloat(p.Previous, 64)
	if err1 != nil || err2 != nil {
		return "was " + p.Previous
	}
	return strconv.FormatFloat(v-prev, 'g', 4, 64)
}

// roundDuration is d, readably rounded.
func roundDuration(d time.Duration) string {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	}
	return d.Round(time.Microsecond).String()
}
