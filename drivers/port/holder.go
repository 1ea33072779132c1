package port

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Holder is a process that has a port open.
type Holder struct {
	PID     int
	Command string // its command line, arguments separated by spaces
}

// Holders lists the processes that have device open, as far as this one
// may look (another user's processes are hidden from all but root). A pty
// is also held by the program that made it (socat).
func Holders(device string) []Holder {
	want, err := filepath.EvalSymlinks(device)
	if err != nil {
		return nil
	}
	procs, _ := os.ReadDir("/proc") // no /proc: nothing found
	self := os.Getpid()
	var out []Holder
	for _, p := range procs {
		n, err := strconv.Atoi(p.Name())
		if err != nil || n == self {
			continue
		}
		fds := filepath.Join("/proc", p.Name(), "fd")
		entries, _ := os.ReadDir(fds) // gone, or not ours to read
		for _, fd := range entries {
			if target, err := os.Readlink(filepath.Join(fds, fd.Name())); err == nil && target == want {
				cmd, _ := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
				out = append(out, Holder{PID: n, Command: strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " "))})
				break
			}
		}
	}
	return out
}
