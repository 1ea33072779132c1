//go:build !(386 || arm || mips || mipsle)

package buffer

// maxFileSize is unbounded where address space is plentiful, and a larger
// first map (address space, not memory) spares bbolt remaps while the file
// grows: each remap copies every node the transaction touched.
const (
	maxFileSize     = 0
	initialMmapSize = 64 << 20
)
