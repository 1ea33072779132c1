module edgegw

go 1.25.0

require (
	github.com/eclipse/paho.golang v0.23.0
	github.com/goburrow/modbus v0.1.0
	github.com/pelletier/go-toml/v2 v2.4.3
	github.com/simonvetter/modbus v1.6.3
	go.bug.st/serial v1.8.0
	go.etcd.io/bbolt v1.5.0
	go.uber.org/goleak v1.3.0
	golang.org/x/sys v0.45.0
)

require (
	github.com/goburrow/serial v0.1.0 // indirect
	github.com/gorilla/websocket v1.5.3 // indirect
	golang.org/x/net v0.43.0 // indirect
)
