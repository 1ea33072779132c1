package uplink

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Command is a write asked for over MQTT: a JSON value published to
// CommandBase/{device}/set/{point}.
type Command struct {
	Device, Point string
	Value         []byte
	// Expires is when the command is too old to be written: CommandTTL
	// after it arrived, or when its Message Expiry runs out if sooner;
	// zero when neither applies.
	Expires time.Time
}

// Result is a command's outcome.
type Result struct {
	Err error
	// Value is the point's value read back after the write (JSON).
	Value json.RawMessage
	// Written is, when the read-back differs, the value that was written.
	Written json.RawMessage
}

// maxCommands bounds the commands accepted and not yet answered: a
// publisher that floods the set topics gets the excess dropped, not a
// goroutine or a queue slot each.
const maxCommands = 32

// logPrefix is how much of a client's payload a log line carries.
const logPrefix = 64

// reply is an answered command on its way to the broker.
type reply struct {
	device, point string
	topic         string // the result topic; "" when the result is only logged
	responseTopic string // the MQTT v5 Response Topic, "" when none
	correlation   []byte
	result        Result
}

// onCommand takes a message on the command topics: it checks it, hands it
// to Commands, and queues its result for the reply worker. It is called on
// the client's receiving goroutine and does not block.
func (u *Uplink) onCommand(p inbound) {
	rest, ok := strings.CutPrefix(p.Topic, u.cfg.CommandBase+"/")
	parts := strings.Split(rest, "/")
	if !ok || len(parts) != 3 || parts[1] != "set" || u.cfg.Commands == nil {
		return
	}
	if p.Retain {
		// A stored retained command (MQTT 3.1.1 cannot ask for none, and
		// an MQTT 5 broker may ignore Retain Handling): it would run again
		// at every reconnect.
		u.log.Warn("mqtt_command_ignored", "topic", p.Topic, "reason", "retained command messages are not executed")
		return
	}
	cmd := Command{Device: parts[0], Point: parts[2], Value: append([]byte(nil), p.Payload...), Expires: u.expires(p)}
	r := reply{topic: p.Topic + "/result"}
	if p.ResponseTopic != "" {
		if validTopic(p.ResponseTopic) {
			r.responseTopic, r.correlation = p.ResponseTopic, append([]byte(nil), p.Correlation...)
		} else {
			u.log.Warn("mqtt_response_topic_invalid", "topic", p.Topic, "response_topic", excerpt([]byte(p.ResponseTopic)),
				"hint", "a Response Topic must be a topic name without wildcards; answered on the result topic only")
		}
	}
	u.command(cmd, r)
}

// command hands cmd to Commands, unless maxCommands are already waiting,
// and queues its result for the reply worker; r says where it goes (no
// topic: it is logged).
func (u *Uplink) command(cmd Command, r reply) {
	select {
	case u.commandSlot <- struct{}{}:
		u.flooded.Store(false)
	default:
		u.droppedCmds.Add(1)
		if !u.flooded.Swap(true) { // once per flood: it ends when a command is taken again
			u.log.Warn("mqtt_command_dropped", "device", cmd.Device, "point", cmd.Point, "waiting", maxCommands,
				"hint", "more commands arrive than the buses write: these are dropped unanswered (logged once per flood)")
		}
		return
	}
	u.log.Info("mqtt_command", "device", cmd.Device, "point", cmd.Point, "value", excerpt(cmd.Value), "bytes", len(cmd.Value))
	r.device, r.point = cmd.Device, cmd.Point
	u.replies.Add(1)
	var once sync.Once
	u.cfg.Commands(cmd, func(res Result) {
		once.Do(func() {
			r.result = res
			u.results <- r // never blocks: one slot per accepted command
		})
	})
}

// CommandsDropped returns how many commands were dropped unanswered
// because maxCommands were already waiting.
func (u *Uplink) CommandsDropped() uint64 { return u.droppedCmds.Load() }

// expires is when a command received now becomes too old to write:
// command_ttl from now, or its Message Expiry (MQTT 5) if sooner.
func (u *Uplink) expires(p inbound) time.Time {
	now := time.Now()
	var at time.Time
	if u.cfg.CommandTTL > 0 {
		at = now.Add(u.cfg.CommandTTL)
	}
	if p.Expiry != nil {
		if e := now.Add(time.Duration(*p.Expiry) * time.Second); at.IsZero() || e.Before(at) {
			at = e
		}
	}
	return at
}

// replyWorker publishes results, one at a time, until results closes.
func (u *Uplink) replyWorker() {
	for r := range u.results {
		if r.topic == "" {
			u.logResult(r)
			<-u.commandSlot
			u.replies.Done()
			continue
		}
		payload := resultPayload(r.result)
		u.publishResult(&publication{Topic: r.topic, Payload: payload})
		if r.responseTopic != "" {
			u.publishResult(&publication{Topic: r.responseTopic, Payload: payload, Correlation: r.correlation})
		}
		<-u.commandSlot
		u.replies.Done()
	}
}

func (u *Uplink) publishResult(p *publication) {
	c := u.current()
	if c == nil {
		u.log.Warn("mqtt_command_result_lost", "topic", p.Topic, "reason", "not connected")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), u.cfg.ConnectTimeout)
	defer cancel()
	p.QoS = min(1, c.qos)
	if _, _, err := c.link.publish(ctx, p, nil); err != nil {
		u.log.Warn("mqtt_command_result_lost", "topic", p.Topic, "err", err)
	}
}

// logResult logs, for debugging, the outcome of a command that has no
// result topic: the bus has logged the write or its failure.
func (u *Uplink) logResult(r reply) {
	u.log.Debug("mqtt_command_done", "device", r.device, "point", r.point, "value", string(r.result.Value), "err", r.result.Err)
}

// resultPayload is a result as published: {"ok":true,"value":21.5}, or
// {"ok":false,"error":"…"} with the value read back and the value written
// when the read-back differed.
func resultPayload(r Result) []byte {
	out := struct {
		OK      bool            `json:"ok"`
		Error   string          `json:"error,omitempty"`
		Value   json.RawMessage `json:"value,omitempty"`
		Written json.RawMessage `json:"written,omitempty"`
	}{OK: r.Err == nil, Value: r.Value, Written: r.Written}
	if r.Err != nil {
		out.Error = r.Err.Error()
	}
	b, err := json.Marshal(out)
	if err != nil { // a driver's value that is not JSON: say so rather than send nothing
		b, _ = json.Marshal(struct {
			OK    bool   `json:"ok"`
			Error string `json:"error"`
		}{false, "internal: result not encodable: " + err.Error()})
	}
	return b
}

// validTopic reports whether s may be published to: a topic name, not a filter.
func validTopic(s string) bool {
	return len(s) <= 65535 && utf8.ValidString(s) && !strings.ContainsAny(s, "+#\x00")
}

// excerpt is at most logPrefix bytes of a client's payload for a log line,
// cut at a character boundary, with "…" when cut.
func excerpt(b []byte) string {
	if len(b) <= logPrefix {
		return strings.ToValidUTF8(string(b), "\uFFFD")
	}
	cut := logPrefix
	for cut > 0 && !utf8.RuneStart(b[cut]) {
		cut--
	}
	return strings.ToValidUTF8(string(b[:cut]), "\uFFFD") + "…"
}
