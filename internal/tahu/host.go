package tahu

import (
	"fmt"
	"strconv"
	"strings"
)

// Host is a Sparkplug host application reduced to the session rules an
// edge node must keep, for tests: it follows one edge node's messages, in
// the order a subscriber got them, as Tahu decodes them, and says which
// rule a message breaks.
type Host struct {
	judge *Judge
	// Node is the edge node followed: "group/node".
	Node string

	online  bool
	bdSeq   string                       // of the session's NBIRTH
	seq     int                          // of the last message of the session
	aliases map[string]map[string]string // device → alias → name
	born    map[string]bool

	// Births counts NBIRTHs, Deaths the NDEATHs that ended a session,
	// RepeatedDeaths those that repeat the death of the session just ended
	// (an intentional MQTT 5 disconnect publishes the NDEATH, then
	// DISCONNECT 0x04 has the broker publish the will too), StaleDeaths
	// those with another bdSeq (a session long gone).
	Births, Deaths, RepeatedDeaths, StaleDeaths int
	// DeviceBirths and DeviceDeaths count DBIRTHs and DDEATHs.
	DeviceBirths, DeviceDeaths int
	// BdSeqs are the bdSeqs of the NBIRTHs, in order.
	BdSeqs []string
	// Data are the DDATA of every session, decoded, with their metrics'
	// names filled in from the DBIRTH.
	Data []Data
}

// Data is one DDATA as the host understood it.
type Data struct {
	Device  string
	Session int // how many NBIRTHs came before it
	Payload
}

// NewHost follows the edge node group/node.
func NewHost(j *Judge, group, node string) *Host {
	return &Host{judge: j, Node: group + "/" + node}
}

// Apply takes the next message of the edge node (other topics are skipped).
func (h *Host) Apply(topic string, payload []byte) error {
	parts := strings.Split(topic, "/")
	if len(parts) < 4 || parts[0] != "spBv1.0" || parts[1]+"/"+parts[3] != h.Node {
		return nil
	}
	typ, device := parts[2], ""
	if len(parts) == 5 {
		device = parts[4]
	}
	if typ == "NCMD" || typ == "DCMD" {
		return nil // the host's own
	}
	p, err := h.judge.Decode(payload)
	if err != nil {
		return fmt.Errorf("%s: %v", topic, err)
	}
	if p.Timestamp == "" {
		return fmt.Errorf("%s: no payload timestamp", topic)
	}
	if typ == "NBIRTH" || typ == "DBIRTH" || typ == "DDATA" {
		// payloads-name-birth-data-requirement: every metric of these.
		for _, m := range p.Metrics {
			if m.Timestamp == "" {
				return fmt.Errorf("%s: metric %q (alias %v) without a timestamp", topic, m.Name, m.Alias)
			}
		}
	}
	switch typ {
	case "NBIRTH":
		return h.nbirth(p)
	case "NDEATH":
		if p.Seq != nil {
			return fmt.Errorf("NDEATH with a seq (%s)", *p.Seq)
		}
		if len(p.Metrics) != 1 || p.Metrics[0].Name != "bdSeq" {
			return fmt.Errorf("NDEATH without its bdSeq metric: %+v", p.Metrics)
		}
		if !h.online && h.Deaths > 0 && p.Metrics[0].Value == h.bdSeq {
			h.RepeatedDeaths++
			return nil
		}
		if !h.online || p.Metrics[0].Value != h.bdSeq {
			h.StaleDeaths++
			return nil
		}
		h.online = false
		h.Deaths++
		return nil
	}
	if !h.online {
		return fmt.Errorf("%s while the node is offline: no NBIRTH before it", topic)
	}
	if err := h.next(p); err != nil {
		return fmt.Errorf("%s: %v", topic, err)
	}
	switch typ {
	case "DBIRTH":
		names := map[string]string{}
		for _, m := range p.Metrics {
			if m.Name == "" || m.Alias == "" || m.Type == "" {
				return fmt.Errorf("DBIRTH %s: metric without name, alias or type: %+v", device, m)
			}
			if _, dup := names[m.Alias]; dup {
				return fmt.Errorf("DBIRTH %s: alias %s twice", device, m.Alias)
			}
			for d, other := range h.aliases {
				if _, dup := other[m.Alias]; dup && d != device {
					return fmt.Errorf("DBIRTH %s: alias %s is %s's too: aliases are unique in the node", device, m.Alias, d)
				}
			}
			names[m.Alias] = m.Name
		}
		h.aliases[device], h.born[device] = names, true
		h.DeviceBirths++
	case "DDATA":
		if !h.born[device] {
			return fmt.Errorf("DDATA of %s without its DBIRTH in this session", device)
		}
		for i, m := range p.Metrics {
			name, ok := h.aliases[device][m.Alias]
			if !ok {
				return fmt.Errorf("DDATA of %s: alias %q is not in its DBIRTH", device, m.Alias)
			}
			p.Metrics[i].Name = name
		}
		h.Data = append(h.Data, Data{Device: device, Session: h.Births, Payload: p})
	case "DDEATH":
		if !h.born[device] {
			return fmt.Errorf("DDEATH of %s, which is not born", device)
		}
		h.born[device] = false
		h.DeviceDeaths++
	default:
		return fmt.Errorf("%s: an edge node does not send %s", topic, typ)
	}
	return nil
}

func (h *Host) nbirth(p Payload) error {
	if p.Seq == nil || *p.Seq != "0" {
		return fmt.Errorf("NBIRTH seq %v, want 0", p.Seq)
	}
	var bdSeq string
	rebirth := false
	for _, m := range p.Metrics {
		switch m.Name {
		case "bdSeq":
			if m.Type != "Int64" {
				return fmt.Errorf("NBIRTH bdSeq of type %s, want Int64", m.Type)
			}
			bdSeq, _ = m.Value.(string)
		case "Node Control/Rebirth":
			rebirth = m.Value == false && m.Type == "Boolean"
		}
	}
	if bdSeq == "" || !rebirth {
		return fmt.Errorf("NBIRTH without a bdSeq or Node Control/Rebirth = false: %+v", p.Metrics)
	}
	if h.online && bdSeq != h.bdSeq {
		return fmt.Errorf("NBIRTH with bdSeq %s while the session of bdSeq %s did not end", bdSeq, h.bdSeq)
	}
	h.online, h.bdSeq, h.seq = true, bdSeq, 0
	h.aliases, h.born = map[string]map[string]string{}, map[string]bool{}
	h.Births++
	h.BdSeqs = append(h.BdSeqs, bdSeq)
	return nil
}

// next checks that p's seq follows the last one, mod 256.
func (h *Host) next(p Payload) error {
	if p.Seq == nil {
		return fmt.Errorf("no seq")
	}
	seq, err := strconv.Atoi(*p.Seq)
	if err != nil || seq != (h.seq+1)%256 {
		return fmt.Errorf("seq %s after %d: a gap or a repeat", *p.Seq, h.seq)
	}
	h.seq = seq
	return nil
}

// Online says whether the node's session is up.
func (h *Host) Online() bool { return h.online }
