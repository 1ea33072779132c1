package uplink

import (
	"context"
	"edgegw/buffer"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"
)

// errRetry ends a drain pass whose publishes failed while connected.
var errRetry = errors.New("uplink: publish failed")

// drain publishes the store's records on connection c, from the oldest
// unacknowledged, until c goes down or ctx ends. A publish the broker
// rejects while c stays up restarts the pass after a backoff, so one bad
// message cannot cause a resend storm.
func (u *Uplink) drain(ctx context.Context, c *connection) {
	// over closes when publishing on c must stop: ctx ended, c was lost,
	// or c is being left.
	over := make(chan struct{})
	watch, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go func() {
		select {
		case <-watch.Done():
		case <-c.down:
		case <-c.leaving:
		}
		close(over)
	}()
	for attempt := 0; ; attempt++ {
		err := u.pass(ctx, c, over)
		if !errors.Is(err, errRetry) {
			return
		}
		timer := time.NewTimer(u.cfg.Backoff(attempt + 1))
		u.rest()
	backoff:
		for {
			select {
			case <-over:
				timer.Stop()
				return
			case <-timer.C:
				break backoff
			}
		}
		u.heartbeat()
	}
}

// pass sends every record once, in order, keeping up to MaxInflight unacked.
func (u *Uplink) pass(ctx context.Context, c *connection, over <-chan struct{}) error {
	// Publishes still waiting when the pass ends are abandoned: a client
	// may forget them on a lost connection without waking them, and
	// their records are resent from the store by the next pass anyway.
	pctx, cancel := context.WithCancel(ctx)
	ps := &pass{u: u, c: c, ctx: ctx, pctx: pctx, over: over, failed: make(chan struct{}), window: make(chan struct{}, u.cfg.MaxInflight),
		batch: u.batcher}
	defer func() {
		select {
		case <-c.leaving:
			ps.settle()
		default:
		}
		cancel()
		ps.wg.Wait()
	}()
	if u.pacer != nil {
		return ps.paced()
	}
	return ps.inOrder()
}

// fetch is how many records a pass reads from the store at a time.
func (p *pass) fetch() int {
	if p.batch != nil {
		return max(p.u.cfg.MaxInflight, p.batch.cfg.Max)
	}
	return p.u.cfg.MaxInflight
}

// next reads the records after seq from the store into *buf.
func (p *pass) next(after uint64, buf *[]buffer.Record) ([]buffer.Record, error) {
	recs, err := p.u.store.Next(after, p.fetch(), (*buf)[:0])
	*buf = recs
	if err != nil {
		p.u.log.Error("buffer_read_failed", "err", err)
		return nil, errRetry
	}
	return recs, nil
}

// inOrder sends every record once, in seq order.
func (p *pass) inOrder() error {
	u := p.u
	var (
		after uint64
		buf   []buffer.Record
	)
	for {
		u.heartbeat()
		committed := u.store.Committed()
		recs, err := p.next(after, &buf)
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			if over, err := p.confirm(); over {
				return err
			}
			if over, err := p.idle(committed); over {
				return err
			}
			continue
		}
		var over bool
		if after, over, err = p.sendAll(recs); over {
			return err
		}
	}
}

// sendAll sends recs, after a linger for more when they would not fill a
// batch, and returns the seq of the last record sent.
func (p *pass) sendAll(recs []buffer.Record) (last uint64, over bool, err error) {
	if p.batch != nil && p.batch.cfg.Linger > 0 && len(recs) < p.batch.cfg.Max {
		if recs, over, err = p.linger(recs); over {
			return 0, over, err
		}
	}
	for len(recs) > 0 {
		n, over, err := p.send(recs)
		if over {
			return 0, over, err
		}
		last, recs = recs[n-1].Seq, recs[n:]
	}
	return last, false, nil
}

// paced sends the records committed since the pass began (live) as they
// come, and the older ones (the backlog) in seq order within the rate the
// live ones leave: live readings are never held back by the backlog.
func (p *pass) paced() error {
	u := p.u
	boundary := u.store.LastSeq() // the backlog: seqs up to here
	live, back := boundary, uint64(0)
	var buf []buffer.Record
	for {
		u.heartbeat()
		committed := u.store.Committed()
		recs, err := p.next(live, &buf)
		if err != nil {
			return err
		}
		if len(recs) > 0 {
			var over bool
			if live, over, err = p.sendAll(recs); over {
				return err
			}
			continue
		}
		if back >= boundary {
			if over, err := p.confirm(); over {
				return err
			}
			if over, err := p.idle(committed); over {
				return err
			}
			continue
		}
		if recs, err = p.next(back, &buf); err != nil {
			return err
		}
		recs = recs[:sort.Search(len(recs), func(i int) bool { return recs[i].Seq > boundary })]
		if len(recs) == 0 {
			back = boundary
			continue
		}
		if paid, over, err := p.awaitPacer(committed); over {
			return err
		} else if !paid {
			continue // live records came: they go first
		}
		n, over, err := p.send(recs)
		if over {
			return err
		}
		back = recs[n-1].Seq
	}
}

// awaitPacer waits until the pacer lets the backlog send (paid), or until
// records are committed (not paid: live ones go first).
func (p *pass) awaitPacer(committed <-chan struct{}) (paid, over bool, err error) {
	d := p.u.pacer.delay()
	if d <= 0 {
		return true, false, nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	return p.await(timer.C, committed)
}

// await waits until timer fires (fired) or records are committed (not
// fired), with heartbeats meanwhile; over when the pass ends first.
func (p *pass) await(timer <-chan time.Time, committed <-chan struct{}) (fired, over bool, err error) {
	p.u.rest()
	defer p.u.heartbeat()
	for {
		select {
		case <-timer:
			return true, false, nil
		case <-committed:
			return false, false, nil
		case <-p.over:
			return false, true, nil
		case <-p.failed:
			return false, true, errRetry
		}
	}
}

// pass is one connection's publishing: a window of at most MaxInflight
// publishes in flight, each acknowledged record acked in the store. Its
// methods report over = true when the pass ends, with pass's result.
type pass struct {
	u    *Uplink
	c    *connection
	ctx  context.Context
	pctx context.Context // ends with the pass: abandons waiting publishes
	over <-chan struct{} // drain's: ctx ended, or c was lost or is being left
	wg   sync.WaitGroup
	// failed closes at the first failed publish: the pass ends and the
	// unacknowledged records go again on the next.
	failed   chan struct{}
	failOnce sync.Once
	window   chan struct{}
	batch    *batcher // nil: each record alone
	// unconfirmed are the seqs published at QoS 0 since the last barrier.
	unconfirmed []uint64
}

// confirm acknowledges the records published at QoS 0 since the last
// time, once a barrier (a PINGREQ after them, wire.go) is answered: the
// broker has read them. At most MaxInflight wait for it, and none past an
// idle moment.
func (p *pass) confirm() (over bool, err error) {
	if len(p.unconfirmed) == 0 {
		return false, nil
	}
	pong, err := p.c.wire.barrier()
	if err != nil {
		p.fail(p.unconfirmed[0], err)
		return true, errRetry
	}
	p.u.rest()
	defer p.u.heartbeat()
	for {
		select {
		case <-pong:
			p.u.acked(p.unconfirmed...)
			p.unconfirmed = p.unconfirmed[:0]
			return false, nil
		case <-p.over:
			return true, nil // sent again on the next connection
		case <-p.failed:
			return true, errRetry
		}
	}
}

// settle waits until every publish in flight is answered (the window is
// empty), at most a connect timeout: the connection is being left.
func (p *pass) settle() {
	t := time.NewTimer(p.u.cfg.ConnectTimeout)
	defer t.Stop()
	for range cap(p.window) {
		select {
		case p.window <- struct{}{}:
		case <-p.c.down:
			return
		case <-p.ctx.Done():
			return
		case <-t.C:
			return
		}
	}
}

// idle waits for records to be committed, or a beat.
func (p *pass) idle(committed <-chan struct{}) (over bool, err error) {
	p.u.rest()
	defer p.u.heartbeat()
	select {
	case <-p.over:
		return true, nil
	case <-p.failed:
		return true, errRetry
	case <-committed:
	}
	return false, nil
}

// acquire waits for room in the window.
func (p *pass) acquire() (over bool, err error) {
	p.u.rest()
	defer p.u.heartbeat()
	for {
		select {
		case p.window <- struct{}{}:
			return false, nil
		case <-p.over:
			return true, nil
		case <-p.failed:
			return true, errRetry
		}
	}
}

// send publishes the first records of recs, in one message when batching,
// and returns how many it used (at least one).
func (p *pass) send(recs []buffer.Record) (n int, over bool, err error) {
	b := p.batch
	if b == nil || len(recs) == 1 {
		over, err := p.sendOne(recs[0])
		return 1, over, err
	}
	if over, err := p.acquire(); over {
		return 0, over, err
	}
	most := b.cfg.Max
	for {
		n = b.fill(recs, most, b.limit(p.c), p.unreadable)
		switch len(b.seqs) {
		case 0:
			<-p.window
			return n, false, nil
		case 1:
			// A batch of one is the record alone, on its own topic.
			<-p.window
			i := slices.IndexFunc(recs[:n], func(r buffer.Record) bool { return r.Seq == b.seqs[0] })
			over, err := p.sendOne(recs[i])
			return n, over, err
		}
		pub := b.publish(p.c.qos)
		if _, over := p.c.exceeds(pub); over {
			// Compressed beyond the broker's maximum: half as many.
			most = len(b.seqs) / 2
			continue
		}
		over, err := p.transmit(pub, slices.Clone(b.seqs))
		return n, over, err
	}
}

// unreadable drops a record that cannot be composed, now or ever, rather
// than block the rest.
func (p *pass) unreadable(rec buffer.Record, err error) {
	p.u.log.Error("buffer_entry_unreadable", "seq", rec.Seq, "err", err)
	p.u.store.Ack(rec.Seq)
}

// linger waits up to the batch linger for more records to fill the batch
// recs begins, and returns recs with those that came.
func (p *pass) linger(recs []buffer.Record) ([]buffer.Record, bool, error) {
	b := p.u.cfg.Batch
	timer := time.NewTimer(b.Linger)
	defer timer.Stop()
	for len(recs) < b.Max {
		committed := p.u.store.Committed()
		more, err := p.u.store.Next(recs[len(recs)-1].Seq, b.Max-len(recs), recs)
		if err != nil {
			return recs, false, nil // sent as they are; the next read reports it
		}
		if len(more) > len(recs) {
			recs = more
			continue
		}
		if fired, over, err := p.await(timer.C, committed); over || fired {
			return recs, over, err
		}
	}
	return recs, false, nil
}

// sendOne publishes rec alone once the window has room, and returns when
// it is on the wire, so the next one cannot overtake it.
func (p *pass) sendOne(rec buffer.Record) (over bool, err error) {
	if over, err := p.acquire(); over {
		return over, err
	}
	u := p.u
	var topic string
	var payload []byte
	if u.cfg.Session != nil {
		u.wireMu.Lock()
		defer u.wireMu.Unlock()
		topic, payload, err = p.session(rec)
	} else {
		topic, payload, err = u.cfg.Compose(nil, rec)
	}
	if err != nil || topic == "" {
		<-p.window
		switch {
		case errors.Is(err, errRetry):
			return true, err
		case err != nil:
			p.unreadable(rec, err)
		}
		return false, nil
	}
	pub := &publication{Topic: topic, QoS: p.c.qos, Payload: payload}
	if size, over := p.c.exceeds(pub); over {
		// The broker would drop the connection, and the reading would be
		// first again on the next one: it can never go to this broker.
		u.drop(p.c, []uint64{rec.Seq}, &u.tooLarge, "mqtt_reading_too_large", "size", size, "broker_maximum", p.c.maxPacket,
			"hint", "the reading is dropped: it is larger than the broker's maximum packet size; raise the broker's limit or send fewer points per device")
		<-p.window
		return false, nil
	}
	return p.transmit(pub, []uint64{rec.Seq})
}

// session composes rec with the Session and publishes the messages that go
// before it; it returns rec's, or no topic when there is none (rec acked).
func (p *pass) session(rec buffer.Record) (topic string, payload []byte, err error) {
	msgs, err := p.u.cfg.Session.Compose(rec)
	if errors.Is(err, ErrTooLarge) {
		p.u.drop(p.c, []uint64{rec.Seq}, &p.u.tooLarge, "mqtt_reading_too_large", "broker_maximum", p.c.maxPacket,
			"hint", "the reading is dropped: its Sparkplug message is larger than the broker's maximum packet size; raise the broker's limit or send fewer points per device")
		return "", nil, nil
	}
	if err != nil {
		return "", nil, err
	}
	if len(msgs) == 0 {
		p.u.store.Ack(rec.Seq)
		return "", nil, nil
	}
	if err := p.u.publishAll(p.ctx, p.c, msgs[:len(msgs)-1]); err != nil {
		p.fail(rec.Seq, err)
		return "", nil, errRetry
	}
	last := msgs[len(msgs)-1]
	return last.Topic, last.Payload, nil
}

// transmit publishes pub, which holds the records seqs, in the window slot
// taken for it, and returns when it is on the wire.
func (p *pass) transmit(pub *publication, seqs []uint64) (over bool, err error) {
	size := packetSize(pub, p.c.proto)
	if p.u.pacer != nil {
		p.u.pacer.charge(size, len(seqs))
	}
	if p.c.qos == 0 {
		// QoS 0 publishes are written (or queued in order) before publish
		// returns; they leave the store once a barrier shows the broker
		// read them (confirm).
		_, _, err := p.c.link.publish(p.ctx, pub, nil)
		<-p.window
		if err != nil {
			p.fail(seqs[0], err)
			return true, errRetry
		}
		p.unconfirmed = append(p.unconfirmed, seqs...)
		if len(p.unconfirmed) >= p.u.cfg.MaxInflight {
			return p.confirm()
		}
		return false, nil
	}
	written := make(chan struct{})
	p.c.outcomes.sending(seqs[0], size, len(seqs))
	p.wg.Add(1)
	go p.publish(pub, seqs, written)
	select {
	case <-written:
		return false, nil
	case <-p.failed:
		return true, errRetry
	case <-p.over:
		return true, nil
	}
}

// publish sends one QoS 1 or 2 publish and waits for its acknowledgement.
func (p *pass) publish(pub *publication, seqs []uint64, written chan struct{}) {
	defer p.wg.Done()
	defer func() { <-p.window }()
	code, reason, err := p.c.link.publish(p.pctx, pub, written)
	p.c.outcomes.done(seqs[0], err == nil && code < 0x80)
	switch {
	case code >= 0x80 && permanentRejection[code]:
		p.u.reject(p.c, seqs, code, reason)
	case code >= 0x80:
		p.fail(seqs[0], fmt.Errorf("broker refused the publish for now: reason code 0x%02x %s", code, reason))
	case err != nil:
		p.fail(seqs[0], err)
	default:
		p.u.acked(seqs...)
	}
}

// fail ends the pass at its first failed publish, logged unless the
// connection or the pass already ended.
func (p *pass) fail(seq uint64, err error) {
	p.failOnce.Do(func() {
		select {
		case <-p.c.down: // the loss is logged once by OnConnectionDown
		case <-p.pctx.Done(): // pass over: unacked records are sent again
		default:
			p.u.log.Warn("mqtt_publish_failed", "broker", p.c.url, "seq", seq, "err", err)
		}
		close(p.failed)
	})
}

// permanentRejection are the PUBACK/PUBREC reason codes that no resend can
// change: such a reading is dropped, counted and logged, or it would hold up
// every reading behind it forever. Other refusals (quota exceeded, server
// busy, unspecified) are retried after a backoff.
var permanentRejection = map[byte]bool{
	0x87: true, // not authorized
	0x90: true, // topic name invalid
	0x95: true, // packet too large
	0x99: true, // payload format invalid
}

// reject drops a reading the broker will never take.
func (u *Uplink) reject(c *connection, seqs []uint64, code byte, reason string) {
	u.drop(c, seqs, &u.rejected, "mqtt_publish_rejected",
		"reason_code", fmt.Sprintf("0x%02x", code), "reason", reason,
		"hint", "the reading is dropped: check the broker's ACL and limits for this gateway's topics")
}

// drop acks the readings of a message that can never be published, counts
// them in *count and logs them in one line: at error level the first time
// for that count, a warning after.
func (u *Uplink) drop(c *connection, seqs []uint64, count *uint64, msg string, attrs ...any) {
	for _, seq := range seqs {
		u.store.Ack(seq)
	}
	u.mu.Lock()
	first := *count == 0
	*count += uint64(len(seqs))
	u.mu.Unlock()
	level := slog.LevelWarn
	if first {
		level = slog.LevelError
	}
	which := []any{"broker", c.url, "seq", seqs[0]}
	if n := len(seqs); n > 1 {
		which = append(which, "last_seq", seqs[n-1], "readings", n)
	}
	u.log.Log(context.Background(), level, msg, append(which, attrs...)...)
}

// exceeds reports whether pub is larger than the broker's Maximum Packet
// Size, and its size when the broker set one.
func (c *connection) exceeds(pub *publication) (size int, over bool) {
	if c.maxPacket == 0 {
		return 0, false
	}
	size = packetSize(pub, c.proto)
	return size, size > int(c.maxPacket)
}
