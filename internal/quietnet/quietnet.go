// Package quietnet reads and writes sockets without telling the Go runtime
// that a system call is under way.
//
// Every ordinary system call wakes the runtime's monitor thread (sysmon)
// when it sleeps, and the monitor then checks every 20 µs until the process
// is idle again. A gateway polling one meter a second makes about ten
// socket calls per reading, each after a short idle spell (a Modbus or MQTT
// round trip), so the monitor woke some 18 times per reading: a sixth of
// the gateway's CPU (docs/BENCHMARKS.md). A socket in non-blocking mode,
// which is how Go keeps its sockets, never blocks, so the runtime needs no
// warning: Conn makes the calls raw, and when the socket is not ready the
// goroutine waits in the runtime's network poller as usual, deadlines and
// Close included.
package quietnet

import "net"

// Wrap returns c with its Read and Write made quietly, where the platform
// and the connection allow it (a TCP or Unix socket on Linux); otherwise
// c itself.
func Wrap(c net.Conn) net.Conn { return wrap(c) }
