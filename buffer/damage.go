package buffer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"

	berrors "go.etcd.io/bbolt/errors"
)

// ErrUnavailable means the buffer's files could not be opened now (an I/O
// error, no memory to map the file): nothing was changed, and Open may be
// tried again later.
var ErrUnavailable = errors.New("buffer: storage unavailable")

// damageError is damage to a file's content, found by a check: what the
// file says is impossible, not merely unreadable now.
type damageError struct{ err error }

func (e *damageError) Error() string { return "damaged file: " + e.err.Error() }
func (e *damageError) Unwrap() error { return e.err }

func damaged(err error) error { return &damageError{err} }

// isDamage tells damage, which recovery moves aside, from an error that
// may pass (EIO, ENOMEM), which must never cost a healthy backlog.
func isDamage(err error) bool {
	var d *damageError
	return errors.As(err, &d) || errors.Is(err, berrors.ErrInvalid) ||
		errors.Is(err, berrors.ErrChecksum) || errors.Is(err, berrors.ErrVersionMismatch)
}

// safeTx runs fn, turning a panic of bbolt into an error: a panic on a
// damaged page is damage; a memory fault (an I/O error under the file's
// memory map raises SIGBUS) is an I/O error, not damage. A segmentation
// fault is a pointer that bbolt followed on a damaged page (a new file
// whose first write a power cut tore): damage. The runtime tells the two
// apart only in its message, SIGSEGV's being "invalid memory address".
func safeTx(fn func() error) (err error) {
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer func() {
		if r := recover(); r != nil {
			if f, fault := r.(interface{ Addr() uintptr }); fault && !strings.Contains(fmt.Sprint(f), "invalid memory address") {
				err = fmt.Errorf("I/O fault under the file's memory map: %v", r)
				return
			}
			err = damaged(fmt.Errorf("%v", r))
		}
	}()
	return fn()
}

// checkMarker is the file that asks the next Open to verify every record:
// damage found while running is recovered from at the next start, which
// is otherwise quick because it reads no records.
func (b *Buffer) checkMarker() string { return b.path + ".check" }

// noteDamage remembers damage found while running: Run stops, and the next
// Open verifies and salvages the file.
func (b *Buffer) noteDamage(err error) {
	if !isDamage(err) {
		return
	}
	b.mu.Lock()
	first := b.damage == nil
	if first {
		b.damage = err
	}
	b.mu.Unlock()
	if first {
		b.log.Error("buffer_damaged", "path", b.path, "err", err, "hint", "the gateway restarts; the next start salvages what can be read")
		if merr := b.markForCheck(); merr != nil {
			b.log.Warn("buffer_check_marker_failed", "path", b.checkMarker(), "err", merr,
				"hint", "the next start checks the file only if it finds damage itself")
		}
	}
}

// markForCheck leaves the marker that makes the next Open read the whole
// file, durably.
func (b *Buffer) markForCheck() error {
	f, err := os.Create(b.checkMarker())
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return syncDir(b.checkMarker())
}

// damageFound returns an error wrapping ErrStopped once damage was found.
func (b *Buffer) damageFound() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.damage != nil {
		return fmt.Errorf("%w: %w", ErrStopped, b.damage)
	}
	if b.reopenErr != nil {
		return fmt.Errorf("%w: %w", ErrStopped, b.reopenErr)
	}
	return nil
}

// syncDir makes the creation, rename or removal of path durable: without
// it, f2fs and xfs may forget a new file's name after a power cut.
func syncDir(path string) error {
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("buffer: sync directory: %w", err)
	}
	defer func() { _ = d.Close() }() // read-only: the Sync is what counts
	if err := d.Sync(); err != nil {
		return fmt.Errorf("buffer: sync directory: %w", err)
	}
	return nil
}
