package buffer

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"
)

// record200 is a typical reading: about 200 bytes of JSON.
var record200 = []byte(`meter1` + "\n" + `"ts":"2026-11-22T12:00:00.123Z","device":"meter1","values":{"voltage_l1":230.1,"voltage_l2":229.8,"voltage_l3":231.0,"current_l1":5.1,"power_total":3512.4,"energy_total":1234.5},"errors":{}}`)

// BenchmarkAppend measures appends per second that reach disk, with the
// default 250ms commit interval and Run committing concurrently: the time
// counts from the first Append to the commit of the last.
func BenchmarkAppend(b *testing.B) {
	buf, err := Open(filepath.Join(b.TempDir(), "buffer.db"), Options{MaxBytes: 8 << 30})
	if err != nil {
		b.Fatal(err)
	}
	defer buf.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- buf.Run(ctx) }()
	b.SetBytes(int64(len(record200)))
	b.ResetTimer()
	for range b.N {
		buf.Append(record200)
	}
	cancel()
	<-done // Run's last commit
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "readings/s")
	if st := buf.Stats(); st.Readings != b.N {
		b.Fatalf("%d readings committed of %d", st.Readings, b.N)
	}
}

// writeBytes is what this process has caused to be written to storage.
func writeBytes(b *testing.B) int64 {
	f, err := os.Open("/proc/self/io")
	if err != nil {
		b.Skip("no /proc/self/io")
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "write_bytes: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	b.Skip("no write_bytes in /proc/self/io")
	return 0
}

// BenchmarkFlashWear appends at a steady rate with the network down (no
// acks) for EDGEGW_WEAR_SECONDS (default 20) and reports the bytes the
// process wrote to storage per reading, against the payload. Run with
// -benchtime 1x: one timed run per rate.
func BenchmarkFlashWear(b *testing.B) {
	secs := 20
	if v, err := strconv.Atoi(os.Getenv("EDGEGW_WEAR_SECONDS")); err == nil && v > 0 {
		secs = v
	}
	for _, rate := range []int{10, 100} {
		b.Run(strconv.Itoa(rate)+"perSec", func(b *testing.B) {
			dir, err := os.MkdirTemp(".", "wear") // on the real disk, not a tmpfs
			if err != nil {
				b.Fatal(err)
			}
			defer os.RemoveAll(dir)
			buf, err := Open(filepath.Join(dir, "buffer.db"), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer buf.Close()
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error)
			go func() { done <- buf.Run(ctx) }()
			// Warm up: the file's first growth is not steady state.
			tick := time.NewTicker(time.Second / time.Duration(rate))
			defer tick.Stop()
			for range rate * 2 {
				<-tick.C
				buf.Append(record200)
			}
			buf.Commit()
			before := writeBytes(b)
			n := rate * secs
			b.ResetTimer()
			for range n {
				<-tick.C
				buf.Append(record200)
			}
			cancel()
			<-done
			b.StopTimer()
			written := writeBytes(b) - before
			perReading := float64(written) / float64(n)
			b.ReportMetric(perReading, "disk-B/reading")
			b.ReportMetric(perReading/float64(len(record200)), "x-payload")
			b.ReportMetric(perReading*float64(rate)*86400/1e9, "GB/day")
		})
	}
}

// backlog builds a buffer holding n ~200-byte records.
func backlog(b *testing.B, n int) (*Buffer, string) {
	path := filepath.Join(b.TempDir(), "buffer.db")
	buf, err := Open(path, Options{MaxBytes: 8 << 30})
	if err != nil {
		b.Fatal(err)
	}
	for i := range n {
		buf.Append(record200)
		if i%100000 == 99999 {
			buf.Commit()
		}
	}
	if err := buf.Close(); err != nil {
		b.Fatal(err)
	}
	return buf, path
}

// BenchmarkDrain reads and acknowledges a 1,000,000-record backlog in
// windows of 64, as the uplink does, with no network in the way.
func BenchmarkDrain(b *testing.B) {
	const n = 1_000_000
	for range b.N {
		b.StopTimer()
		_, path := backlog(b, n)
		buf, err := Open(path, Options{MaxBytes: 8 << 30})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- buf.Run(ctx) }()
		b.StartTimer()
		var after uint64
		var recs []Record
		for got := 0; got < n; {
			recs, _ = buf.Next(after, 64, recs[:0])
			for _, r := range recs {
				buf.Ack(r.Seq)
				after = r.Seq
			}
			got += len(recs)
		}
		cancel()
		<-done
		b.StopTimer()
		if st := buf.Stats(); st.Readings != 0 {
			b.Fatalf("%d left", st.Readings)
		}
		buf.Close()
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "readings/s")
}

// BenchmarkMemory1M opens a buffer holding 1,000,000 records and reports the
// Go heap in use and the process RSS.
func BenchmarkMemory1M(b *testing.B) {
	_, path := backlog(b, 1_000_000)
	debug.FreeOSMemory() // what building the backlog used is not the buffer's
	for range b.N {
		runtime.GC()
		buf, err := Open(path, Options{MaxBytes: 8 << 30})
		if err != nil {
			b.Fatal(err)
		}
		recs, _ := buf.Next(0, 64, nil) // as the uplink starts draining
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MiB")
		b.ReportMetric(float64(rss())/(1<<20), "rss-MiB")
		b.ReportMetric(float64(buf.Stats().FileSize)/(1<<20), "file-MiB")
		runtime.KeepAlive(recs)
		buf.Close()
	}
}

func rss() int64 {
	data, _ := os.ReadFile("/proc/self/status")
	for _, line := range bytes.Split(data, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(string(v)), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// BenchmarkOpen1M measures Open of a buffer holding 1,000,000 records up to
// the first window of records read, as the gateway starts: the time it
// stands between start and the first poll. With a full log to replay too.
func BenchmarkOpen1M(b *testing.B) {
	_, path := backlog(b, 1_000_000)
	// Fill most of the log after the last checkpoint: the worst replay.
	buf, err := Open(path, Options{MaxBytes: 8 << 30})
	if err != nil {
		b.Fatal(err)
	}
	for buf.wal.off < walSize*2/3 {
		for range 1000 {
			buf.Append(record200)
		}
		buf.Commit()
	}
	crash(buf)
	dropPageCache(b, path)
	b.ResetTimer()
	for range b.N {
		buf, err := Open(path, Options{MaxBytes: 8 << 30})
		if err != nil {
			b.Fatal(err)
		}
		if recs, _ := buf.Next(0, 64, nil); len(recs) != 64 {
			b.Fatalf("%d records", len(recs))
		}
		b.StopTimer()
		if st := buf.Stats(); st.Readings < 1_000_000 {
			b.Fatalf("%d readings", st.Readings)
		}
		crash(buf) // no checkpoint: the next Open replays the same log
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/open")
}

// dropPageCache evicts path's pages, so an Open reads from the disk.
func dropPageCache(b *testing.B, path string) {
	for _, p := range []string{path, path + ".wal"} {
		if f, err := os.Open(p); err == nil {
			dropCache(f)
			f.Close()
		}
	}
}
