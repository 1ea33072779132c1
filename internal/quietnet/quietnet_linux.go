package quietnet

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// Conn is a net.Conn whose Read and Write are raw system calls on the
// connection's non-blocking socket.
type Conn struct {
	net.Conn
	raw syscall.RawConn
	// The calls' arguments and results live here, and the functions
	// handed to raw are made once, so that a call allocates nothing.
	rmu, wmu sync.Mutex
	rd, wr   rawCall
	readFn   func(fd uintptr) bool
	writeFn  func(fd uintptr) bool
}

// rawCall is one Read's or Write's buffer, progress and error.
type rawCall struct {
	b     []byte
	n     int
	errno syscall.Errno
	stuck bool // a write of nothing: internal/poll's io.ErrUnexpectedEOF
}

func wrap(c net.Conn) net.Conn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	q := &Conn{Conn: c, raw: raw}
	q.readFn, q.writeFn = q.read, q.write
	return q
}

// Read reads like net.Conn's: it waits until data arrives, the deadline
// passes or the connection is closed, and returns io.EOF at the peer's end.
func (c *Conn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.rd = rawCall{b: b}
	err := c.raw.Read(c.readFn)
	n, errno := c.rd.n, c.rd.errno
	c.rd.b = nil
	switch {
	case err != nil:
		return 0, c.opError("read", err)
	case errno != 0:
		return 0, c.opError("read", os.NewSyscallError("read", errno))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// read is one try of Read; false: wait until the socket is readable.
func (c *Conn) read(fd uintptr) bool {
	b := c.rd.b
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		c.rd.n, c.rd.errno = int(r), e
		return true
	}
}

// Write writes all of b, waiting while the socket's send buffer is full,
// unless the deadline passes, the connection is closed or fails.
func (c *Conn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wr = rawCall{b: b}
	err := c.raw.Write(c.writeFn)
	w := c.wr
	c.wr.b = nil
	switch {
	case err != nil:
		return w.n, c.opError("write", err)
	case w.errno != 0:
		return w.n, c.opError("write", os.NewSyscallError("write", w.errno))
	case w.stuck:
		return w.n, c.opError("write", io.ErrUnexpectedEOF)
	}
	return w.n, nil
}

// write is one try of Write; false: wait until the socket is writable.
func (c *Conn) write(fd uintptr) bool {
	w := &c.wr
	for w.n < len(w.b) {
		r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&w.b[w.n])), uintptr(len(w.b)-w.n))
		switch e {
		case 0:
			if r == 0 {
				w.stuck = true
				return true
			}
			w.n += int(r)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			w.errno = e
			return true
		}
	}
	return true
}

// opError words err as net.Conn's Read and Write do (the raw calls say
// "raw-read"), so that logs and errors.Is read the same.
func (c *Conn) opError(op string, err error) error {
	if oe, ok := err.(*net.OpError); ok {
		err = oe.Err
	}
	return &net.OpError{Op: op, Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
