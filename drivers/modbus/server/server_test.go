package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"edgegw/drivers/modbus"
	"edgegw/internal/testlog"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeBus answers every request with reply (or err) after release says so,
// and serves Fresh from fresh; it records the requests it was given.
type fakeBus struct {
	mu      sync.Mutex
	got     [][]byte
	reply   []byte
	err     error
	fresh   map[uint16][]byte // start → reply data, for holding reads
	release chan struct{}     // nil: answer at once
}

func (b *fakeBus) Do(ctx context.Context, unit byte, pdu []byte) ([]byte, time.Duration, error) {
	b.mu.Lock()
	b.got = append(b.got, append([]byte{unit}, pdu...))
	reply, err, release := b.reply, b.err, b.release
	b.mu.Unlock()
	if release != nil {
		select {
		case <-release:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
	}
	if reply == nil && err == nil {
		reply = []byte{pdu[0], 0} // no answer set: echo the function code
	}
	return reply, time.Millisecond, err
}

func (b *fakeBus) Fresh(out []byte, unit byte, table modbus.Table, start, count uint16, since time.Time) ([]byte, bool) {
	if d, ok := b.fresh[start]; ok && table == modbus.Holding && len(d) == 2*int(count) {
		return append(out, d...), true
	}
	return out, false
}

func (b *fakeBus) requests() int { b.mu.Lock(); defer b.mu.Unlock(); return len(b.got) }

// start runs a server on a free loopback port until the test ends.
func start(t *testing.T, cfg Config, bus Bus) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen = ln.Addr().String()
	ln.Close()
	s := New(cfg, bus)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	// Listening once a connection is taken.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", cfg.Listen)
		if err == nil {
			c.Close()
			return s, cfg.Listen
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond) // polling for the listener
	}
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// adu is a request ADU: transaction id tid, unit, pdu.
func adu(tid uint16, unit byte, pdu ...byte) []byte {
	return appendReply(nil, header{tid: tid, unit: unit}, pdu)
}

// roundTrip sends a request and returns the reply's PDU, checking its header.
func roundTrip(t *testing.T, c net.Conn, tid uint16, unit byte, pdu ...byte) []byte {
	t.Helper()
	if _, err := c.Write(adu(tid, unit, pdu...)); err != nil {
		t.Fatal(err)
	}
	return readReply(t, c, tid, unit)
}

func readReply(t *testing.T, c net.Conn, tid uint16, unit byte) []byte {
	t.Helper()
	var hdr [headerLen]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		t.Fatalf("no reply: %v", err)
	}
	h, err := parseHeader(hdr[:])
	if err != nil || h.tid != tid || h.unit != unit {
		t.Fatalf("reply header % x: %v", hdr, err)
	}
	pdu := make([]byte, h.length-1)
	if _, err := io.ReadFull(c, pdu); err != nil {
		t.Fatal(err)
	}
	return pdu
}

func TestServerAnswers(t *testing.T) {
	bus := &fakeBus{reply: []byte{3, 4, 0, 1, 0, 2}, fresh: map[uint16][]byte{100: {0xAB, 0xCD}}}
	s, addr := start(t, Config{Name: "test", Units: []byte{1, 2}, Cache: time.Second}, bus)
	c := dial(t, addr)
	cases := []struct {
		name    string
		unit    byte
		pdu     []byte
		want    []byte
		viaBus  bool
		outcome Outcome
	}{
		{"a read not in the image goes to the bus", 1, []byte{3, 0, 10, 0, 2}, []byte{3, 4, 0, 1, 0, 2}, true, FromBus},
		{"a read polled within cache is answered from memory", 1, []byte{3, 0, 100, 0, 1}, []byte{3, 2, 0xAB, 0xCD}, false, Cache},
		{"an input read is not the holding image", 2, []byte{4, 0, 100, 0, 1}, []byte{3, 4, 0, 1, 0, 2}, true, FromBus},
		{"an unknown unit: 0x0B, no bus traffic", 9, []byte{3, 0, 0, 0, 1}, []byte{0x83, 0x0B}, false, Refused},
		{"writes are off: exception 1", 1, []byte{6, 0, 1, 0, 7}, []byte{0x86, 1}, false, Refused},
		{"an unknown function: exception 1", 1, []byte{0x2B, 0x0E, 1, 0}, []byte{0xAB, 1}, false, Refused},
		{"126 registers: exception 3", 1, []byte{3, 0, 0, 0, 126}, []byte{0x83, 3}, false, Refused},
		{"past the last address: exception 2", 1, []byte{3, 0xFF, 0xFF, 0, 2}, []byte{0x83, 2}, false, Refused},
		{"a short PDU: exception 3", 1, []byte{3, 0}, []byte{0x83, 3}, false, Refused},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before, counts := bus.requests(), s.Counts().Requests[tc.outcome]
			got := roundTrip(t, c, uint16(i), tc.unit, tc.pdu...)
			if !bytes.Equal(got, tc.want) {
				t.Errorf("reply % x, want % x", got, tc.want)
			}
			if went := bus.requests() > before; went != tc.viaBus {
				t.Errorf("went to the bus: %v, want %v", went, tc.viaBus)
			}
			if n := s.Counts().Requests[tc.outcome]; n != counts+1 {
				t.Errorf("outcome %s counted %d times, want %d", tc.outcome, n-counts, 1)
			}
		})
	}
}

func TestServerBusFailures(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want byte
	}{{ErrBusy, 6}, {errors.New("timeout: no reply within 1s"), 0x0B}} {
		bus := &fakeBus{err: tc.err}
		_, addr := start(t, Config{Units: []byte{1}, Writes: true}, bus)
		got := roundTrip(t, dial(t, addr), 1, 1, 6, 0, 1, 0, 7)
		if !bytes.Equal(got, []byte{0x86, tc.want}) {
			t.Errorf("%v: reply % x, want exception %d", tc.err, got, tc.want)
		}
	}
}

// TestServerHostileClients: what a broken or hostile client sends ends its
// own connection, and the server goes on answering the others.
func TestServerHostileClients(t *testing.T) {
	bus := &fakeBus{reply: []byte{3, 2, 0, 1}}
	s, addr := start(t, Config{Units: []byte{1}, MaxClients: 3, Idle: 200 * time.Millisecond}, bus)
	closed := func(t *testing.T, c net.Conn) {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(make([]byte, 16)); err == nil {
			t.Fatalf("the server answered %d bytes instead of closing", n)
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("the connection stayed open")
		}
	}
	for _, tc := range []struct {
		name string
		send []byte
	}{
		{"protocol id 1", []byte{0, 1, 0, 1, 0, 6, 1, 3, 0, 0, 0, 1}},
		{"length over 260 bytes", []byte{0, 1, 0, 0, 1, 0, 1, 3, 0, 0, 0, 1}},
		{"length 0", []byte{0, 1, 0, 0, 0, 0, 1}},
		{"length 1: a unit id and no PDU", []byte{0, 1, 0, 0, 0, 1, 1}},
		{"half a header, then silence", []byte{0, 1, 0}},
		{"a header promising more than comes", []byte{0, 1, 0, 0, 0, 6, 1, 3}},
		{"nothing at all", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, addr)
			if _, err := c.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			closed(t, c)
		})
	}
	waitNoClients := func() {
		deadline := time.Now().Add(5 * time.Second)
		for s.Counts().Clients > 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond) // polling the server's count
		}
	}
	t.Run("more than max_clients", func(t *testing.T) {
		waitNoClients() // the connections closed above may not have ended at the server yet
		var open []net.Conn
		for i := range 3 {
			c := dial(t, addr)
			roundTrip(t, c, uint16(i), 1, 3, 0, 0, 0, 1) // served: counted as a client
			open = append(open, c)
		}
		closed(t, dial(t, addr))
		if got := s.Counts().Clients; got != 3 {
			t.Errorf("%d clients, want 3", got)
		}
		for _, c := range open {
			c.Close()
		}
	})
	// Whatever came before, a good client is answered.
	waitNoClients()
	if got := roundTrip(t, dial(t, addr), 7, 1, 3, 0, 0, 0, 1); !bytes.Equal(got, []byte{3, 2, 0, 1}) {
		t.Errorf("reply % x after the hostile clients", got)
	}
	if n := s.Counts().Requests[Failed]; n < 4 {
		t.Errorf("%d malformed frames counted as errors, want at least 4", n)
	}
}

// TestServerFloodIsBusy: a client that pipelines more requests than its
// share gets exception 6 for the rest at once, and the requests in its share
// answered when the bus gets to them.
func TestServerFloodIsBusy(t *testing.T) {
	bus := &fakeBus{reply: []byte{3, 2, 0, 1}, release: make(chan struct{})}
	_, addr := start(t, Config{Units: []byte{1}, PerClient: 2}, bus)
	c := dial(t, addr)
	var flood []byte
	for i := range 10 {
		flood = append(flood, adu(uint16(i), 1, 3, 0, byte(i), 0, 1)...)
	}
	if _, err := c.Write(flood); err != nil {
		t.Fatal(err)
	}
	replies := map[uint16][]byte{}
	read := func() {
		var hdr [headerLen]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			t.Fatal(err)
		}
		h, _ := parseHeader(hdr[:])
		pdu := make([]byte, h.length-1)
		if _, err := io.ReadFull(c, pdu); err != nil {
			t.Fatal(err)
		}
		replies[h.tid] = pdu
	}
	for range 8 {
		read()
	}
	for tid := uint16(2); tid < 10; tid++ {
		if !bytes.Equal(replies[tid], []byte{0x83, 6}) {
			t.Errorf("request %d: % x, want exception 6 while two wait", tid, replies[tid])
		}
	}
	close(bus.release)
	read()
	read()
	for tid := range uint16(2) {
		if !bytes.Equal(replies[tid], []byte{3, 2, 0, 1}) {
			t.Errorf("request %d: % x, want the bus's answer", tid, replies[tid])
		}
	}
}

func TestParseHeader(t *testing.T) {
	h, err := parseHeader([]byte{0x12, 0x34, 0, 0, 0, 6, 9})
	if err != nil || h.tid != 0x1234 || h.length != 6 || h.unit != 9 {
		t.Fatalf("%+v %v", h, err)
	}
	if _, err := parseHeader([]byte{0, 0, 0, 0, 0, 255, 1}); !errors.Is(err, errFrame) {
		t.Errorf("length 255: %v, want errFrame", err)
	}
	if got := binary.BigEndian.Uint16(appendReply(nil, h, []byte{3, 0})[4:]); got != 3 {
		t.Errorf("reply length %d, want 3", got)
	}
}

// TestServerJournalIsQuiet: a master that reconnects for every poll is
// logged once, not at every connection; a client closed for being idle is
// logged with why.
func TestServerJournalIsQuiet(t *testing.T) {
	var sink testlog.Sink
	s, addr := start(t, Config{Units: []byte{1}, Idle: 300 * time.Millisecond, Log: slog.New(slog.NewTextHandler(&sink, nil))}, &fakeBus{reply: []byte{3, 2, 0, 1}})
	for i := range 5 {
		c := dial(t, addr)
		roundTrip(t, c, uint16(i), 1, 3, 0, 0, 0, 1)
		c.Close()
	}
	waitClients := func(n int) {
		deadline := time.Now().Add(5 * time.Second)
		for s.Counts().Clients != n {
			if time.Now().After(deadline) {
				t.Fatalf("%d clients, want %d", s.Counts().Clients, n)
			}
			time.Sleep(5 * time.Millisecond) // polling the server's count
		}
	}
	waitClients(0)
	log := sink.String()
	// The start's own probe connection counts as the first arrival.
	if n := strings.Count(log, "modbus_client_connected"); n != 1 {
		t.Errorf("%d connected lines for one host reconnecting, want 1:\n%s", n, log)
	}
	if strings.Contains(log, "modbus_client_gone") {
		t.Errorf("short sessions closed by the client were logged:\n%s", log)
	}
	dial(t, addr) // says nothing: closed as idle
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(sink.String(), "modbus_client_gone") {
		if time.Now().After(deadline) {
			t.Fatalf("no line for the idle client:\n%s", sink.String())
		}
		time.Sleep(5 * time.Millisecond) // polling the log
	}
	if log := sink.String(); !strings.Contains(log, `reason="idle for 300ms"`) {
		t.Errorf("the idle client's line does not say why:\n%s", log)
	}
}
