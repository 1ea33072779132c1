package buffer

import (
	"testing"

	bolt "go.etcd.io/bbolt"
)

type boltTx = bolt.Tx

func mustBolt(t *testing.T, path string) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(path, 0o640, nil)
	if err != nil {
		t.Fatal(err)
	}
	return db
}
