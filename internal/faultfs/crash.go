package faultfs

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
)

// Torn writes persist whole sectors of this size.
const sectorSize = 512

// Survivors says which unsynced operations a simulated power cut keeps.
type Survivors int

// How much of what was not synced survives a power cut.
const (
	// None: only what was synced.
	None Survivors = iota
	// All: everything written, as if the cut came just after.
	All
	// Prefix: of each file, its unsynced writes up to a random one, that
	// one torn at a sector; of the directory, a prefix of its changes.
	Prefix
	// Subset: of each file, a random subset of its unsynced writes in
	// order, the last one kept torn at a sector; of the directory, a prefix.
	Subset
)

// CrashState returns the files (name → content) a power cut would leave
// after the first n recorded operations, recorded from an empty directory.
// A file's data is durable once it was synced; its name, once the directory
// was synced after it was created or renamed (as on f2fs or xfs, not only
// ext4). rng chooses among the unsynced operations for Prefix and Subset.
func CrashState(ops []Op, n int, keep Survivors, rng *rand.Rand) map[string][]byte {
	type inode struct {
		durable []byte
		pending []Op
	}
	inodes := map[uint64]*inode{}
	get := func(ino uint64) *inode {
		if inodes[ino] == nil {
			inodes[ino] = &inode{}
		}
		return inodes[ino]
	}
	names := map[string]uint64{} // durable directory
	var nsPending []Op
	for _, op := range ops[:n] {
		switch op.Kind {
		case Write, Truncate:
			in := get(op.Ino)
			in.pending = append(in.pending, op)
		case Sync:
			in := get(op.Ino)
			for _, p := range in.pending {
				in.durable = apply(in.durable, p, len(p.Data))
			}
			in.pending = nil
		case Create, Rename, Remove:
			get(op.Ino)
			nsPending = append(nsPending, op)
		case SyncDir:
			for _, p := range nsPending {
				applyName(names, p)
			}
			nsPending = nil
		}
	}
	// What of the unsynced survives.
	nsKeep := 0
	switch keep {
	case All:
		nsKeep = len(nsPending)
	case Prefix, Subset:
		nsKeep = rng.IntN(len(nsPending) + 1)
	}
	for _, p := range nsPending[:nsKeep] {
		applyName(names, p)
	}
	inos := make([]uint64, 0, len(inodes))
	for ino := range inodes {
		inos = append(inos, ino)
	}
	slices.Sort(inos) // the same rng draws for the same record
	contents := map[uint64][]byte{}
	for _, ino := range inos {
		in := inodes[ino]
		data := slices.Clone(in.durable)
		var kept []int
		switch keep {
		case All:
			for i := range in.pending {
				kept = append(kept, i)
			}
		case Prefix:
			for i := range rng.IntN(len(in.pending) + 1) {
				kept = append(kept, i)
			}
		case Subset:
			for i := range in.pending {
				if rng.IntN(2) == 0 {
					kept = append(kept, i)
				}
			}
		}
		for j, i := range kept {
			p := in.pending[i]
			length := len(p.Data)
			if keep != All && j == len(kept)-1 && p.Kind == Write {
				length = tear(p, rng)
			}
			data = apply(data, p, length)
		}
		contents[ino] = data
	}
	out := make(map[string][]byte, len(names))
	for name, ino := range names {
		out[name] = contents[ino]
	}
	return out
}

// tear returns how much of write p reaches the disk when the power goes
// while it is written: whole sectors from its start, maybe all, maybe none.
func tear(p Op, rng *rand.Rand) int {
	var cuts []int
	for c := 0; c < len(p.Data); c++ {
		if (p.Off+int64(c))%sectorSize == 0 {
			cuts = append(cuts, c)
		}
	}
	cuts = append(cuts, len(p.Data))
	return cuts[rng.IntN(len(cuts))]
}

func apply(data []byte, op Op, length int) []byte {
	switch op.Kind {
	case Truncate:
		if int64(len(data)) > op.Size {
			return data[:op.Size]
		}
		return append(data, make([]byte, op.Size-int64(len(data)))...)
	case Write:
		end := op.Off + int64(length)
		if end > int64(len(data)) {
			data = append(data, make([]byte, end-int64(len(data)))...)
		}
		copy(data[op.Off:end], op.Data[:length])
	}
	return data
}

func applyName(names map[string]uint64, op Op) {
	switch op.Kind {
	case Create:
		names[op.Name] = op.Ino
	case Rename:
		delete(names, op.Name)
		names[op.To] = op.Ino
	case Remove:
		if names[op.Name] == op.Ino {
			delete(names, op.Name)
		}
	}
}

// WriteState writes the files of a state into dir.
func WriteState(dir string, state map[string][]byte) error {
	for name, data := range state {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o640); err != nil {
			return err
		}
	}
	return nil
}
