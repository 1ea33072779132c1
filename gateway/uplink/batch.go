package uplink

import (
	"time"

	"edgegw/buffer"
	"edgegw/gateway/batch"
)

// Batching puts several records in one message (docs/MQTT.md, "Batches").
type Batching struct {
	// Max is the most records in one message; 0 or 1 publishes each alone.
	Max int
	// Bytes bounds a batch's payload before compression; DefaultBatchBytes when 0.
	Bytes int
	// Linger is how long a batch may wait for records to fill it; with 0
	// a batch holds what is committed already, so live readings go one
	// by one and a backlog in batches.
	Linger time.Duration
	// Topic receives the batches.
	Topic string
	// Encoding compresses the batches (never a record published alone).
	Encoding batch.Encoding
}

// DefaultBatchBytes is Batching.Bytes when it is 0.
const DefaultBatchBytes = 64 << 10

func (b Batching) on() bool { return b.Max > 1 }

// batcher builds the batches of one pass.
type batcher struct {
	cfg      Batching
	compose  ComposeFunc
	compress *batch.Compressor
	doc      []byte // the uncompressed array
	item     []byte // one record's payload
	seqs     []uint64
}

func newBatcher(cfg Batching, compose ComposeFunc) (*batcher, error) {
	if cfg.Bytes <= 0 {
		cfg.Bytes = DefaultBatchBytes
	}
	c, err := batch.NewCompressor(cfg.Encoding)
	if err != nil {
		return nil, err
	}
	return &batcher{cfg: cfg, compose: compose, compress: c}, nil
}

// fill builds the array of the first records of recs: at most max of
// them and limit bytes, at least one. It returns how many records it
// used; a record that cannot be composed is passed to bad and skipped.
// The seqs of the records in the array are b.seqs.
func (b *batcher) fill(recs []buffer.Record, max, limit int, bad func(buffer.Record, error)) (used int) {
	b.doc = append(b.doc[:0], '[')
	b.seqs = b.seqs[:0]
	for _, rec := range recs {
		if len(b.seqs) == max {
			break
		}
		var err error
		if _, b.item, err = b.compose(b.item[:0], rec); err != nil {
			bad(rec, err)
			used++
			continue
		}
		if len(b.seqs) > 0 && len(b.doc)+1+len(b.item)+1 > limit {
			break
		}
		if len(b.seqs) > 0 {
			b.doc = append(b.doc, ',')
		}
		b.doc = append(b.doc, b.item...)
		b.seqs = append(b.seqs, rec.Seq)
		used++
	}
	b.doc = append(b.doc, ']')
	return used
}

// publish returns the message of the array fill built.
// On MQTT 3.1.1 the properties are dropped: a consumer tells the encoding
// by the payload's first bytes.
func (b *batcher) publish(qos byte) *publication {
	p := &publication{Topic: b.cfg.Topic, QoS: qos, Payload: b.compress.Compress(nil, b.doc), ContentType: batch.ContentType}
	if e := b.compress.Encoding(); e != batch.None {
		p.Encoding = string(e)
	}
	return p
}

// limit is the most bytes an uncompressed array may have on connection c:
// Bytes, and no more than fits the broker's Maximum Packet Size around
// the topic and properties.
func (b *batcher) limit(c *connection) int {
	limit := b.cfg.Bytes
	if c.maxPacket == 0 || b.compress.Encoding() != batch.None {
		return limit // compressed: known only once compressed (send halves it then)
	}
	b.doc = b.doc[:0]
	// The remaining length grows by at most 3 bytes with the payload.
	room := int(c.maxPacket) - packetSize(b.publish(c.qos), c.proto) - 3
	return max(1, min(limit, room))
}
