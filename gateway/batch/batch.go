// Package batch is the batch format of docs/MQTT.md: several readings in
// one MQTT message, as a JSON array of the readings exactly as each would
// be published alone, optionally compressed. The uplink writes it; the
// decode command (and any consumer) reads it.
package batch

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
)

// ContentType is the MQTT v5 Content Type of every batch.
const ContentType = "application/json"

// EncodingProperty is the MQTT v5 user property that names a batch's
// compression; it is absent on an uncompressed batch.
const EncodingProperty = "content-encoding"

// Encoding is a batch's compression, as EncodingProperty names it.
type Encoding string

// The encodings; None is an uncompressed batch.
const (
	None Encoding = ""
	Gzip Encoding = "gzip"
	Zstd Encoding = "zstd"
)

// ParseEncoding reads the config's compression key ("none" is None).
func ParseEncoding(s string) (Encoding, error) {
	switch s {
	case "", "none":
		return None, nil
	case "gzip":
		return Gzip, nil
	case "zstd":
		return Zstd, nil
	}
	return None, fmt.Errorf("compression %q is not none, gzip or zstd", s)
}

// Compressor compresses batches. It keeps its encoder between batches;
// it is not safe for concurrent use.
type Compressor struct {
	enc  Encoding
	zstd *zstd.Encoder
	gzip *gzip.Writer
	out  bytes.Buffer
}

// NewCompressor returns a Compressor for e.
func NewCompressor(e Encoding) (*Compressor, error) {
	c := &Compressor{enc: e}
	switch e {
	case None:
	case Zstd:
		// One goroutine: the uplink compresses one batch at a time and a
		// gateway's cores belong to its buses.
		z, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault))
		if err != nil {
			return nil, err
		}
		c.zstd = z
	case Gzip:
		c.gzip = gzip.NewWriter(&c.out)
	default:
		return nil, fmt.Errorf("batch: unknown encoding %q", e)
	}
	return c, nil
}

// Encoding returns what the Compressor writes.
func (c *Compressor) Encoding() Encoding { return c.enc }

// Compress appends src, compressed, to dst; with None it appends src.
func (c *Compressor) Compress(dst, src []byte) []byte {
	switch c.enc {
	case Zstd:
		return c.zstd.EncodeAll(src, dst)
	case Gzip:
		c.out.Reset()
		c.gzip.Reset(&c.out)
		// Writes to a bytes.Buffer do not fail.
		_, _ = c.gzip.Write(src)
		_ = c.gzip.Close()
		return append(dst, c.out.Bytes()...)
	}
	return append(dst, src...)
}

// Sniff returns the encoding a message's first bytes show: a zstd frame
// (28 B5 2F FD), gzip (1F 8B), else none. Over MQTT 3.1.1, which carries no
// content-encoding property, this is how a consumer tells.
func Sniff(payload []byte) Encoding {
	switch {
	case bytes.HasPrefix(payload, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return Zstd
	case bytes.HasPrefix(payload, []byte{0x1f, 0x8b}):
		return Gzip
	}
	return None
}

// ErrTooLarge is returned when a message inflates beyond the limit given
// to Decompress.
var ErrTooLarge = errors.New("batch: decompressed message exceeds the limit")

// Decompress returns payload decompressed as e says, at most limit bytes:
// a small message must not make its reader allocate without bound.
func Decompress(payload []byte, e Encoding, limit int) ([]byte, error) {
	var r io.Reader
	switch e {
	case None:
		if len(payload) > limit {
			return nil, ErrTooLarge
		}
		return payload, nil
	case Zstd:
		d, err := zstd.NewReader(bytes.NewReader(payload), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(uint64(limit)+1))
		if err != nil {
			return nil, err
		}
		defer d.Close()
		r = d
	case Gzip:
		g, err := gzip.NewReader(bytes.NewReader(payload))
		if err != nil {
			return nil, fmt.Errorf("batch: gzip: %w", err)
		}
		r = g
	default:
		return nil, fmt.Errorf("batch: unknown encoding %q", e)
	}
	out, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if errors.Is(err, zstd.ErrWindowSizeExceeded) || errors.Is(err, zstd.ErrDecoderSizeExceeded) {
		return nil, ErrTooLarge // it says it would need more memory than the limit
	}
	if err != nil {
		return nil, fmt.Errorf("batch: %s: %w", e, err)
	}
	if len(out) > limit {
		return nil, ErrTooLarge
	}
	return out, nil
}

// Readings returns the readings a message holds: the elements of a batch,
// or the one reading of a message published alone.
func Readings(doc []byte) ([]json.RawMessage, error) {
	doc = bytes.TrimSpace(doc)
	if len(doc) > 0 && doc[0] == '[' {
		var rs []json.RawMessage
		if err := json.Unmarshal(doc, &rs); err != nil {
			return nil, fmt.Errorf("batch: not a JSON array of readings: %w", err)
		}
		return rs, nil
	}
	if !json.Valid(doc) || len(doc) == 0 || doc[0] != '{' {
		return nil, errors.New("batch: neither a reading (a JSON object) nor a batch (a JSON array)")
	}
	return []json.RawMessage{doc}, nil
}
