// Package tahu runs Eclipse Tahu's Sparkplug B codec (npm sparkplug-payload,
// installed by scripts/tahu.sh) in a node process, so that tests judge
// edgegw's Sparkplug bytes with an implementation that is not edgegw's.
package tahu

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// Judge is a running node process that decodes payloads.
type Judge struct {
	mu  sync.Mutex
	in  io.WriteCloser
	out *bufio.Scanner
}

// Start starts the judge; it stops when the test ends.
func Start(t testing.TB) *Judge {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Dir(file)
	cmd := exec.Command("node", filepath.Join(dir, "judge.js"))
	cmd.Dir = dir
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("node (scripts/deps.sh test installs it and the Tahu codec): %v", err)
	}
	t.Cleanup(func() { _ = in.Close(); _ = cmd.Wait() })
	sc := bufio.NewScanner(out)
	sc.Buffer(nil, 64<<20)
	return &Judge{in: in, out: sc}
}

// Payload is a payload as Tahu decodes it: 64-bit integers as decimal
// strings, bytes as base64.
type Payload struct {
	Timestamp string   `json:"timestamp"`
	Seq       *string  `json:"seq"`
	UUID      string   `json:"uuid"`
	Metrics   []Metric `json:"metrics"`
	Error     string   `json:"error"`
}

// Metric is a metric as Tahu decodes it.
type Metric struct {
	Name         string              `json:"name"`
	Alias        string              `json:"alias"`
	Timestamp    string              `json:"timestamp"`
	Type         string              `json:"type"`
	Value        any                 `json:"value"`
	IsHistorical bool                `json:"isHistorical"`
	IsNull       bool                `json:"isNull"`
	Properties   map[string]Property `json:"properties"`
}

// Property is a metric's property as Tahu decodes it.
type Property struct {
	Type  string `json:"type"`
	Value any    `json:"value"`
}

// Encode has Tahu encode payload, an object as its encodePayload takes
// it: {"timestamp":…,"metrics":[{"name":…,"type":"Boolean","value":true}]}.
func (j *Judge) Encode(payload any) ([]byte, error) {
	doc, err := json.Marshal(payload)
	if err != nil {
		return nil, err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, err := fmt.Fprintf(j.in, "E %s\n", doc); err != nil {
		return nil, err
	}
	if !j.out.Scan() {
		return nil, fmt.Errorf("tahu: the judge stopped: %v", j.out.Err())
	}
	var out struct{ Payload, Error string }
	if err := json.Unmarshal(j.out.Bytes(), &out); err != nil {
		return nil, fmt.Errorf("tahu: %v: %s", err, j.out.Bytes())
	}
	if out.Error != "" {
		return nil, fmt.Errorf("tahu refused to encode: %s", out.Error)
	}
	return base64.StdEncoding.DecodeString(out.Payload)
}

// Decode decodes payload, or says why Tahu refused it.
func (j *Judge) Decode(payload []byte) (Payload, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, err := fmt.Fprintln(j.in, base64.StdEncoding.EncodeToString(payload)); err != nil {
		return Payload{}, err
	}
	if !j.out.Scan() {
		return Payload{}, fmt.Errorf("tahu: the judge stopped: %v", j.out.Err())
	}
	var p Payload
	if err := json.Unmarshal(j.out.Bytes(), &p); err != nil {
		return Payload{}, fmt.Errorf("tahu: %v: %s", err, j.out.Bytes())
	}
	if p.Error != "" {
		return p, fmt.Errorf("tahu refused the payload: %s", p.Error)
	}
	return p, nil
}
