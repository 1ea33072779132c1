package faultfs

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
)

// Torn writes persist whole units of one of these sizes: a sector, or a
// flash page as an SD card or an ext4 block writes it.
const (
	sectorSize = 512
	pageSize   = 4096
)

// Survivors says which unsynced operations a simulated power cut keeps.
type Survivors int

// How much of what was not synced survives a power cut.
const (
	// None: only what was synced.
	None Survivors = iota
	// All: everything written, as if the cut came just after.
	All
	// Prefix: of each file, its unsynced writes up to a random one, that
	// one torn (tear); of the directory, a prefix of its changes.
	Prefix
	// Subset: of each file, a random subset of its unsynced writes in
	// order, the last one kept torn (tear); of the directory, a prefix.
	Subset
)

// CrashState returns the files (name → content) a power cut would leave
// after the first n recorded operations, recorded from an empty directory.
// A file's data is durable once it was synced; its name, once the directory
// was synced after it was created or renamed (as on f2fs or xfs, not only
// ext4). rng chooses among the unsynced operations for Prefix and Subset.
func CrashState(ops []Op, n int, keep Survivors, rng *rand.Rand) map[string][]byte {
	d := durableState(ops[:n])
	nsKeep := 0
	switch keep {
	case All:
		nsKeep = len(d.nsPending)
	case Prefix, Subset:
		nsKeep = rng.IntN(len(d.nsPending) + 1)
	}
	for _, p := range d.nsPending[:nsKeep] {
		applyName(d.names, p)
	}
	inos := make([]uint64, 0, len(d.inodes))
	for ino := range d.inodes {
		inos = append(inos, ino)
	}
	slices.Sort(inos) // the same rng draws for the same record
	contents := map[uint64][]byte{}
	for _, ino := range inos {
		contents[ino] = d.inodes[ino].survive(keep, rng)
	}
	out := make(map[string][]byte, len(d.names))
	for name, ino := range d.names {
		out[name] = contents[ino]
	}
	return out
}

// disk is what is durable after some operations, and what is not yet.
type disk struct {
	inodes    map[uint64]*inode
	names     map[string]uint64 // the durable directory
	nsPending []Op              // directory changes not yet synced
}

// inode is a file's synced data and its writes since.
type inode struct {
	durable []byte
	pending []Op
}

func durableState(ops []Op) *disk {
	d := &disk{inodes: map[uint64]*inode{}, names: map[string]uint64{}}
	get := func(ino uint64) *inode {
		if d.inodes[ino] == nil {
			d.inodes[ino] = &inode{}
		}
		return d.inodes[ino]
	}
	for _, op := range ops {
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
			d.nsPending = append(d.nsPending, op)
		case SyncDir:
			for _, p := range d.nsPending {
				applyName(d.names, p)
			}
			d.nsPending = nil
		}
	}
	return d
}

// survive returns the file's content after a power cut that keeps keep of
// its unsynced writes, the last kept one torn (but with All).
func (in *inode) survive(keep Survivors, rng *rand.Rand) []byte {
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
		if keep != All && j == len(kept)-1 && p.Kind == Write {
			data = tear(data, p, rng)
			continue
		}
		data = apply(data, p, len(p.Data))
	}
	return data
}

// tear applies what of write p reaches the disk when the power goes while
// it is written: whole units (sectors or 4 KiB pages, at random) of it,
// either from its start (maybe all, maybe none) or any subset of them, as
// a device that reorders its writes leaves them.
func tear(data []byte, p Op, rng *rand.Rand) []byte {
	unit := int64(sectorSize)
	if rng.IntN(2) == 0 {
		unit = pageSize
	}
	var cuts []int // where units start within p.Data, and its end
	for c := 0; c < len(p.Data); c++ {
		if c == 0 || (p.Off+int64(c))%unit == 0 {
			cuts = append(cuts, c)
		}
	}
	cuts = append(cuts, len(p.Data))
	units := len(cuts) - 1
	keep := make([]bool, units)
	if rng.IntN(2) == 0 {
		for u := range rng.IntN(units + 1) { // a prefix
			keep[u] = true
		}
	} else {
		for u := range keep { // any subset
			keep[u] = rng.IntN(2) == 0
		}
	}
	for u, k := range keep {
		if !k {
			continue
		}
		lo, hi := p.Off+int64(cuts[u]), p.Off+int64(cuts[u+1])
		if hi > int64(len(data)) {
			data = append(data, make([]byte, hi-int64(len(data)))...)
		}
		copy(data[lo:hi], p.Data[cuts[u]:cuts[u+1]])
	}
	return data
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
