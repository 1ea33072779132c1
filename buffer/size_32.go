//go:build 386 || arm || mips || mipsle

package buffer

// maxFileSize keeps the file, and so the memory map, well inside the 2 GB a
// 32-bit process can map; the first map is moderate for the same reason.
const (
	maxFileSize     = 1 << 30
	initialMmapSize = 4 << 20
)
