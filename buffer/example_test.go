package buffer_test

import (
	"fmt"
	"os"
	"path/filepath"

	"edgegw/buffer"
)

// The life of a reading: appended, committed with a seq, read oldest first,
// acknowledged once the broker has it, and gone.
func Example() {
	dir, _ := os.MkdirTemp("", "buffer")
	defer os.RemoveAll(dir)
	b, err := buffer.Open(filepath.Join(dir, "buffer.db"), buffer.Options{})
	if err != nil {
		panic(err)
	}
	defer b.Close()

	b.Append([]byte(`{"v":1}`))
	b.Append([]byte(`{"v":2}`))
	b.Commit() // Run does this every commit interval

	recs, _ := b.Next(0, 10, nil)
	for _, r := range recs {
		fmt.Println(r.Seq, string(r.Data))
		b.Ack(r.Seq)
	}
	b.Commit()
	fmt.Println("left:", b.Stats().Readings)
	// Output:
	// 1 {"v":1}
	// 2 {"v":2}
	// left: 0
}
