package uplink

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"edgegw/gateway/batch"
	"edgegw/internal/testbroker"
	"edgegw/internal/testlog"
)

// batching returns a Config mutation for batches to test/batch.
func batching(max int, e batch.Encoding, linger time.Duration) func(*Config) {
	return func(c *Config) {
		c.Batch = Batching{Max: max, Topic: "test/batch", Encoding: e, Linger: linger}
	}
}

// delivered is what a consumer makes of the messages: each message's
// seqs (a batch holds several), decoded by decode.
type delivered struct {
	batches [][]uint64 // seqs of each batch message
	singles []uint64   // seqs of readings published alone
}

func (d delivered) all() []uint64 {
	var out []uint64
	for _, b := range d.batches {
		out = append(out, b...)
	}
	return append(out, d.singles...)
}

// decodeAll reads every data and batch message; decompress undoes a
// batch's compression as its content-encoding property says (MQTT 5) or,
// over 3.1.1, which has no properties, as its first bytes show.
func decodeAll(t testing.TB, msgs []testbroker.Message, decompress func(testing.TB, string, []byte) []byte) delivered {
	t.Helper()
	var d delivered
	for _, m := range msgs {
		switch m.Topic {
		case "test/data":
			d.singles = append(d.singles, seqsOf(t, []testbroker.Message{m})...)
		case "test/batch":
			var encoding string
			if testProtocol(t) == MQTT311 {
				if m.Properties != nil && (m.Properties.ContentType != "" || len(m.Properties.User) > 0) {
					t.Fatalf("a batch sent over 3.1.1 has MQTT 5 properties: %+v", m.Properties)
				}
				if e := batch.Sniff(m.Payload); e != batch.None {
					encoding = string(e)
				}
			} else {
				if m.Properties == nil || m.Properties.ContentType != batch.ContentType {
					t.Fatalf("batch without Content Type %s: %+v", batch.ContentType, m.Properties)
				}
				encoding = m.Properties.User.Get(batch.EncodingProperty)
			}
			doc := decompress(t, encoding, m.Payload)
			var rs []struct{ Seq uint64 }
			if err := json.Unmarshal(doc, &rs); err != nil {
				t.Fatalf("batch is not a JSON array of readings: %v: %.200q", err, doc)
			}
			var seqs []uint64
			for _, r := range rs {
				seqs = append(seqs, r.Seq)
			}
			d.batches = append(d.batches, seqs)
		}
	}
	return d
}

// withCLI decompresses with Debian's gzip and zstd programs: an
// implementation independent of the one that compressed.
func withCLI(t testing.TB, encoding string, payload []byte) []byte {
	t.Helper()
	var prog string
	switch encoding {
	case "":
		return payload
	case "gzip":
		prog = "gzip"
	case "zstd":
		prog = "zstd"
	default:
		t.Fatalf("unknown content-encoding %q", encoding)
	}
	if _, err := exec.LookPath(prog); err != nil {
		t.Fatalf("%s is not installed (scripts/deps.sh test installs it): %v", prog, err)
	}
	cmd := exec.Command(prog, "-d", "-c")
	cmd.Stdin = bytes.NewReader(payload)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s -d: %v", prog, err)
	}
	return out
}

// inOrderOnce reports whether seqs is 1..n, each once, in order.
func inOrderOnce(seqs []uint64, n int) bool {
	if len(seqs) != n {
		return false
	}
	for i, s := range seqs {
		if s != uint64(i+1) {
			return false
		}
	}
	return true
}

// TestBacklogGoesInBatchesLiveReadingsAlone: with no linger, a backlog
// goes in batches of at most Max, in seq order, and a reading that comes
// alone goes alone on its own topic.
func TestBacklogGoesInBatchesLiveReadingsAlone(t *testing.T) {
	bothProtocols(t, func(t *testing.T) {
		br := testbroker.Start(t)
		sub := testbroker.Subscribe(t, br.Addr(), "test/#")
		store := openBuffer(t)
		fill(t, store, 500)
		start(t, store, []string{br.URL()}, batching(64, batch.None, 0))
		isAll := func(n int) func([]testbroker.Message) bool {
			return func(m []testbroker.Message) bool { return len(decodeAll(t, m, withCLI).all()) >= n }
		}
		sub.WaitFor(t, 10*time.Second, "the backlog", isAll(500))
		waitEmpty(t, store)
		d := decodeAll(t, sub.Messages(), withCLI)
		if !inOrderOnce(d.all(), 500) || len(d.singles) > 1 {
			t.Fatalf("backlog: batches %v, singles %v", d.batches, d.singles)
		}
		if len(d.batches) < 8 {
			t.Errorf("500 readings in %d batches, want at least 500/64", len(d.batches))
		}
		for _, b := range d.batches {
			if len(b) > 64 {
				t.Errorf("a batch of %d readings, over batch_max 64", len(b))
			}
		}
		fill(t, store, 1) // seq 501, live
		msgs := sub.WaitFor(t, 10*time.Second, "the live reading", isAll(501))
		if last := msgs[len(msgs)-1]; last.Topic != "test/data" {
			t.Errorf("the live reading went to %s, want alone on test/data", last.Topic)
		}
	})
}

// TestBatchLingersToFill: a batch waits up to its linger for Max records.
func TestBatchLingersToFill(t *testing.T) {
	bothProtocols(t, func(t *testing.T) {
		br := testbroker.Start(t)
		sub := testbroker.Subscribe(t, br.Addr(), "test/#")
		store := openBuffer(t)
		fill(t, store, 3)
		// An hour's linger: nothing can go before the batch is full.
		start(t, store, []string{br.URL()}, batching(5, batch.None, time.Hour))
		fill(t, store, 2)
		msgs := sub.WaitFor(t, 10*time.Second, "a batch", func(m []testbroker.Message) bool {
			return len(decodeAll(t, m, withCLI).all()) > 0
		})
		d := decodeAll(t, msgs, withCLI)
		if len(d.batches) != 1 || !inOrderOnce(d.batches[0], 5) || len(d.singles) != 0 {
			t.Fatalf("want one batch of seqs 1..5, got batches %v, singles %v", d.batches, d.singles)
		}
	})
}

// TestBatchesSplitAtTheBrokersMaximumPacket: against Mosquitto's
// max_packet_size, batches (plain, gzip, zstd) are cut to fit; nothing is
// dropped and the connection is never lost.
func TestBatchesSplitAtTheBrokersMaximumPacket(t *testing.T) {
	bothProtocols(t, batchesSplitAtTheBrokersMaximumPacket)
}

func batchesSplitAtTheBrokersMaximumPacket(t *testing.T) {
	for _, e := range []batch.Encoding{batch.None, batch.Gzip, batch.Zstd} {
		name := string(e)
		if e == batch.None {
			name = "none"
		}
		t.Run(name, func(t *testing.T) {
			b := testbroker.Start(t, testbroker.WithConfig("max_packet_size 2000"))
			sub := testbroker.Subscribe(t, b.Addr(), "test/#")
			store := openBuffer(t)
			// Readings of ~260 bytes that compress poorly (random-looking
			// digits), so that compressed batches must be cut too.
			for i := range 400 {
				var data []byte
				for j := range 24 {
					data = strconv.AppendUint(data, uint64(i*7919+j*104729)*2654435761%1000000007, 10)
				}
				store.Append(data)
			}
			if err := store.Commit(); err != nil {
				t.Fatal(err)
			}
			r := start(t, store, []string{b.URL()}, batching(200, e, 0))
			sub.WaitFor(t, 20*time.Second, "every reading", func(m []testbroker.Message) bool {
				return len(decodeAll(t, m, withCLI).all()) >= 400
			})
			waitEmpty(t, store)
			msgs := sub.Messages()
			d := decodeAll(t, msgs, withCLI)
			// Over 3.1.1 the limit is learned from closes: what went just
			// before one may come again (consumers dedupe on seq).
			if seqs := d.all(); testProtocol(t) == MQTT5 && !inOrderOnce(seqs, 400) || !covers(seqs, 400) {
				t.Fatalf("seqs %v", seqs)
			}
			biggest := 0
			for _, m := range msgs {
				biggest = max(biggest, len(m.Payload))
			}
			if biggest > 2000 {
				t.Errorf("a payload of %d bytes passed a broker whose limit is 2000", biggest)
			}
			if len(d.batches) <= 400/200 {
				t.Errorf("%d batches for 400 readings and batch_max 200: not cut at the broker's limit", len(d.batches))
			}
			// Over 3.1.1 the limit is learned from the broker's closes: three,
			// then one per halving of the batch.
			if n := r.up.Connects(); n != 1 && testProtocol(t) == MQTT5 || n > 12 {
				t.Errorf("%d connects: a batch over the limit costs the connection", n)
			}
			if n := r.up.TooLarge(); n != 0 {
				t.Errorf("%d readings dropped as too large", n)
			}
			t.Logf("%s: 400 readings in %d batches and %d alone, largest payload %d bytes", name, len(d.batches), len(d.singles), biggest)
		})
	}
}

// TestCompressedBatchesDecodeIndependently: zstd and gzip batches carry
// their content-encoding and decode with Debian's zstd and gzip.
func TestCompressedBatchesDecodeIndependently(t *testing.T) {
	bothProtocols(t, func(t *testing.T) {
		for _, e := range []batch.Encoding{batch.Gzip, batch.Zstd} {
			t.Run(string(e), func(t *testing.T) {
				br := testbroker.Start(t)
				sub := testbroker.Subscribe(t, br.Addr(), "test/#")
				store := openBuffer(t)
				for i := range 300 {
					store.Append([]byte(`{"voltage_l1":230.` + strconv.Itoa(i%10) + `,"energy_total":` + strconv.Itoa(1000+i) + `}`))
				}
				if err := store.Commit(); err != nil {
					t.Fatal(err)
				}
				start(t, store, []string{br.URL()}, batching(100, e, 0))
				msgs := sub.WaitFor(t, 10*time.Second, "every reading", func(m []testbroker.Message) bool {
					return len(decodeAll(t, m, withCLI).all()) >= 300
				})
				d := decodeAll(t, msgs, withCLI)
				if !inOrderOnce(d.all(), 300) || len(d.batches) != 3 {
					t.Fatalf("want 3 batches of seqs 1..300, got %v and alone %v", d.batches, d.singles)
				}
				var raw, wire int
				for _, m := range msgs {
					if m.Topic != "test/batch" {
						continue
					}
					got := string(batch.Sniff(m.Payload)) // 3.1.1: no properties
					if testProtocol(t) == MQTT5 {
						got = m.Properties.User.Get(batch.EncodingProperty)
					}
					if got != string(e) {
						t.Errorf("content-encoding %q, want %q", got, e)
					}
					wire += len(m.Payload)
					raw += len(withCLI(t, string(e), m.Payload))
				}
				if wire*3 > raw {
					t.Errorf("%s: %d bytes on the wire for %d of JSON", e, wire, raw)
				}
				// What the gateway's own decoder makes of it is the same.
				for _, m := range msgs {
					if m.Topic != "test/batch" {
						continue
					}
					own, err := batch.Decompress(m.Payload, e, 1<<20)
					if err != nil || !bytes.Equal(own, withCLI(t, string(e), m.Payload)) {
						t.Errorf("batch.Decompress: %v", err)
					}
				}
				t.Logf("%s: %d bytes of JSON in %d on the wire", e, raw, wire)
			})
		}
	})
}

// TestRefusedBatchIsDroppedInOneLine: a batch the broker refuses for good
// (its ACL denies the batch topic) drops all of its readings, counted, and
// is logged once, with its seq range, not once per reading.
func TestRefusedBatchIsDroppedInOneLine(t *testing.T) {
	br := testbroker.Start(t, testbroker.WithACL(t, "topic readwrite test/data", "topic readwrite test/status"))
	store := openBuffer(t)
	fill(t, store, 100)
	logs := &testlog.Sink{}
	r := start(t, store, []string{br.URL()}, batching(50, batch.None, 0), func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	waitEmpty(t, store)
	if got := r.up.Rejected(); got != 100 {
		t.Fatalf("rejected %d, want the 100 readings of the two batches", got)
	}
	lines := strings.Count(logs.String(), "msg=mqtt_publish_rejected")
	if lines != 2 || !strings.Contains(logs.String(), "seq=1 last_seq=50 readings=50") {
		t.Fatalf("%d log lines for 2 refused batches:\n%.2000s", lines, logs.String())
	}
}
