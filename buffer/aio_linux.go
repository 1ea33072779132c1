package buffer

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// aioWriter writes the log's direct blocks through Linux AIO, so that a
// commit makes no blocking system call. A blocking one (pwrite) makes the
// Go runtime hand its processor to another thread and wake its monitor,
// which then checks every 20 µs until the process is idle again: at one
// reading a second, that was a fifth of the gateway's CPU
// (docs/BENCHMARKS.md). Here the write is submitted without waiting
// (RWF_NOWAIT: the kernel refuses rather than blocks) and its completion,
// synced (the file is O_DSYNC), is signalled on an eventfd that the
// goroutine waits on in the runtime's network poller, like a socket.
// Anything AIO cannot do is written with pwrite as before.
type aioWriter struct {
	ctx  uint64   // aio_context_t
	efd  *os.File // the eventfd completions are signalled on
	efdN int      // its descriptor (os.File.Fd would make it blocking)
	raw  syscall.RawConn
	cb   iocb
	cbs  [1]*iocb
	ev   ioEvent
	cnt  [8]byte // the eventfd's counter, as read
	wait func(fd uintptr) bool
	// f is the log file the writer writes, fd its descriptor (looked up
	// once, when the log takes the writer).
	f  *os.File
	fd int
	// broken: a write may still be in the kernel's hands; never reused.
	broken bool
}

// aioFree keeps released writers for the next log: io_destroy waits for an
// RCU grace period (tens of milliseconds), which tests that open and
// close many buffers would pay each time. At most one per log ever open
// at once, for the life of the process.
var aioFree struct {
	sync.Mutex
	writers []*aioWriter
}

// getAIOWriter returns a released writer or a new one, writing to f.
func getAIOWriter(f *os.File) (*aioWriter, error) {
	fd, err := rawFd(f)
	if err != nil {
		return nil, err
	}
	var a *aioWriter
	aioFree.Lock()
	if n := len(aioFree.writers); n > 0 {
		a = aioFree.writers[n-1]
		aioFree.writers = aioFree.writers[:n-1]
	}
	aioFree.Unlock()
	if a == nil {
		if a, err = newAIOWriter(); err != nil {
			return nil, err
		}
	}
	a.f, a.fd = f, fd
	return a, nil
}

// release gives a back for reuse; it must not be used afterwards.
func (a *aioWriter) release() {
	if a.broken {
		a.destroy()
		return
	}
	a.f = nil
	aioFree.Lock()
	aioFree.writers = append(aioFree.writers, a)
	aioFree.Unlock()
}

// iocb is struct iocb of linux/aio_abi.h (little-endian: the key before
// the rw flags; every target of edgegw is little-endian).
type iocb struct {
	_       uint64 // aio_data
	_       uint32 // aio_key
	rwFlags uint32
	opcode  uint16
	_       int16 // aio_reqprio
	fildes  uint32
	buf     uint64
	nbytes  uint64
	offset  int64
	_       uint64 // aio_reserved2
	flags   uint32
	resfd   uint32
}

// ioEvent is struct io_event.
type ioEvent struct {
	data, obj uint64
	res, res2 int64
}

const (
	iocbCmdPwrite = 1
	iocbFlagResfd = 1 << 0
)

// newAIOWriter sets up a context for one write at a time; it fails where
// the kernel has no AIO (or a seccomp filter forbids it).
func newAIOWriter() (*aioWriter, error) {
	var ctx uint64
	if _, _, e := syscall.RawSyscall(unix.SYS_IO_SETUP, 1, uintptr(unsafe.Pointer(&ctx)), 0); e != 0 {
		return nil, fmt.Errorf("io_setup: %w", e)
	}
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		_, _, _ = syscall.RawSyscall(unix.SYS_IO_DESTROY, uintptr(ctx), 0, 0)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	a := &aioWriter{ctx: ctx, efd: os.NewFile(uintptr(fd), "aio-eventfd"), efdN: fd}
	if a.raw, err = a.efd.SyscallConn(); err != nil {
		a.destroy()
		return nil, err
	}
	a.cbs[0] = &a.cb
	a.wait = a.readCounter
	return a, nil
}

// errAIORefused is a write AIO would not take without blocking (or at
// all): it is made with pwrite instead.
var errAIORefused = errors.New("aio refused the write")

// writeAt writes b at off in the writer's file (open O_DIRECT|O_DSYNC) and
// returns once it is synced. errAIORefused: nothing was written, write it
// another way.
func (a *aioWriter) writeAt(b []byte, off int64) error {
	a.cb = iocb{opcode: iocbCmdPwrite, fildes: uint32(a.fd), buf: uint64(uintptr(unsafe.Pointer(&b[0]))),
		nbytes: uint64(len(b)), offset: off, flags: iocbFlagResfd, resfd: uint32(a.efdN), rwFlags: unix.RWF_NOWAIT}
	if _, _, e := syscall.RawSyscall(unix.SYS_IO_SUBMIT, uintptr(a.ctx), 1, uintptr(unsafe.Pointer(&a.cbs[0]))); e != 0 {
		return errAIORefused
	}
	// The kernel has b now: it must stay where it is until the event.
	for {
		if err := a.raw.Read(a.wait); err != nil {
			// Not while the log is open: destroy() closes the eventfd.
			a.broken = true
			return fmt.Errorf("buffer: wait for the log's write: %w", err)
		}
		n, _, e := syscall.RawSyscall6(unix.SYS_IO_GETEVENTS, uintptr(a.ctx), 0, 1, uintptr(unsafe.Pointer(&a.ev)), 0, 0)
		if e == 0 && n == 1 {
			break
		}
	}
	runtime.KeepAlive(b)
	switch res := a.ev.res; {
	case res == -int64(syscall.EAGAIN) || res == -int64(syscall.EOPNOTSUPP) || res == -int64(syscall.EINVAL):
		return errAIORefused
	case res < 0:
		return &os.PathError{Op: "write", Path: a.f.Name(), Err: syscall.Errno(-res)}
	case res != int64(len(b)):
		return &os.PathError{Op: "write", Path: a.f.Name(), Err: fmt.Errorf("short write: %d of %d bytes", res, len(b))}
	}
	return nil
}

// readCounter reads the eventfd's counter; false: not signalled yet.
func (a *aioWriter) readCounter(fd uintptr) bool {
	_, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&a.cnt[0])), 8)
	return e != syscall.EAGAIN
}

// rawFd is f's descriptor, without os.File.Fd's switch to blocking mode.
func rawFd(f *os.File) (int, error) {
	sc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var fd int
	err = sc.Control(func(d uintptr) { fd = int(d) })
	return fd, err
}

func (a *aioWriter) destroy() {
	_, _, _ = syscall.RawSyscall(unix.SYS_IO_DESTROY, uintptr(a.ctx), 0, 0)
	_ = a.efd.Close()
}
