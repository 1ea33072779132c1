//go:build !(386 || arm || mips || mipsle)

package buffer

// maxFileSize is unbounded where address space is plentiful.
const maxFileSize = 0
