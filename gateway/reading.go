package gateway

import (
	"edgegw/drivers"

	"bytes"
	"errors"
	"strconv"
)

// entrySep separates the device name from the JSON body in a buffer entry.
// Device names never contain it (nameRe).
const entrySep = '\n'

// AppendEntry encodes r as a buffer entry: the device name, entrySep, then
// the JSON message without its seq, which is only known once the buffer has
// committed it: `"ts":…,"device":…,"values":{…},"errors":{…}}`.
func AppendEntry(dst []byte, r *drivers.Reading) []byte {
	return append(appendEntry(dst, r), '}')
}

// AppendReport is AppendEntry for a device with report = "change": the
// message also says whether it is full (every point) or partial (what
// changed).
func AppendReport(dst []byte, r *drivers.Reading, full bool) []byte {
	dst = appendEntry(dst, r)
	if full {
		return append(dst, `,"full":true}`...)
	}
	return append(dst, `,"full":false}`...)
}

// appendEntry is an entry without its closing brace.
func appendEntry(dst []byte, r *drivers.Reading) []byte {
	dst = append(dst, r.Device...)
	dst = append(dst, entrySep)
	dst = append(dst, `"ts":"`...)
	dst = r.Time.UTC().AppendFormat(dst, "2006-01-02T15:04:05.000Z07:00")
	dst = append(dst, `","device":`...)
	dst = drivers.AppendJSONString(dst, r.Device)
	dst = append(dst, `,"values":{`...)
	for i, v := range r.Values {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = drivers.AppendJSONString(dst, v.Point)
		dst = append(dst, ':')
		dst = v.AppendJSON(dst)
	}
	dst = append(dst, `},"errors":{`...)
	for i, e := range r.Errors {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = drivers.AppendJSONString(dst, e.Point)
		dst = append(dst, ':')
		dst = drivers.AppendJSONString(dst, e.Err)
	}
	return append(dst, '}')
}

// ErrBadEntry means a buffer entry was not written by AppendEntry.
var ErrBadEntry = errors.New("gateway: malformed buffer entry")

// Message turns a committed buffer entry into the topic and payload that
// docs/MQTT.md specifies: {prefix}/{gateway}/{device} and {"seq":N,…}.
// The payload is appended to dst.
func Message(dst []byte, topicBase string, seq uint64, entry []byte) (topic string, payload []byte, err error) {
	i := bytes.IndexByte(entry, entrySep)
	if i <= 0 {
		return "", dst, ErrBadEntry
	}
	topic = topicBase + "/" + string(entry[:i])
	dst = append(dst, `{"seq":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, ',')
	dst = append(dst, entry[i+1:]...)
	return topic, dst, nil
}
