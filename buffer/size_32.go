//go:build 386 || arm || mips || mipsle

package buffer

// maxFileSize keeps the file, and so the memory map, well inside the 2 GB a
// 32-bit process can map.
const maxFileSize = 1 << 30
