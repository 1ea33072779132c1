// The runtime re-reads the CPU limit every second to adjust GOMAXPROCS
// (Go 1.25+): a cgroup file read and an affinity call each second, for a
// limit that on a gateway is fixed by its unit. A changed CPUQuota takes
// effect at the next restart instead.
//
//go:debug updatemaxprocs=0

// Command edgegw is the edge gateway: it polls the sensors of sensors.toml,
// keeps every reading on flash and publishes them to MQTT brokers.
// See README.md for the command line; this file only wires things up.
package main

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"edgegw/board"
	"edgegw/buffer"
	"edgegw/drivers/modbus"
	"edgegw/drivers/modbus/simulator"
	"edgegw/drivers/port"
	"edgegw/drivers/serial"
	"edgegw/gateway"
	"edgegw/gateway/config"
	"edgegw/internal/journal"
)

// Set at build time with -ldflags "-X main.version=… -X main.commit=…".
var (
	version = "dev"
	commit  = "unknown"
)

const defaultConfig = "/etc/edgegw/sensors.toml"

// Exit codes of run, per docs/MQTT.md.
const (
	exitOK      = 0
	exitConfig  = 1
	exitFailure = 2
)

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitFailure
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return cmdRun(rest, stderr)
	case "check":
		return cmdCheck(rest, stdout, stderr)
	case "ports":
		return cmdPorts(stdout, stderr)
	case "simulate":
		return cmdSimulate(rest, stderr)
	case "scan":
		return cmdScan(rest, stdout, stderr)
	case "poll":
		return cmdPoll(rest, stdout, stderr)
	case "buffer":
		return cmdBuffer(rest, stdout, stderr)
	case "decode":
		return cmdDecode(rest, os.Stdin, stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintf(stdout, "edgegw %s (commit %s) %s/%s %s\n", version, commit, runtime.GOOS, runtime.GOARCH, runtime.Version())
		return exitOK
	case "help", "-h", "-help", "--help":
		usage(stdout)
		return exitOK
	default:
		fmt.Fprintf(stderr, "edgegw: unknown command %q\n", cmd)
		usage(stderr)
		return exitFailure
	}
}

// usageText is the command summary; scripts/manpage builds edgegw(1) from
// the same file.
//
//go:embed usage.txt
var usageText string

func usage(w io.Writer) { fmt.Fprint(w, usageText) }

// newLogger logs to w; when w is the journal (under systemd), with
// priorities journald understands and without time stamps.
func newLogger(w io.Writer, debug bool) *slog.Logger {
	level := slog.LevelInfo
	if debug {
		level = slog.LevelDebug
	}
	f, isFile := w.(*os.File)
	return slog.New(journal.NewHandler(w, level, isFile && journal.IsJournal(f)))
}

// systemd is the service manager's notify socket (a no-op without one).
type systemd struct{}

func (systemd) Notify(state string) { _, _ = daemon.SdNotify(false, state) } // without systemd no one listens

// configFlags is a subcommand's flag set with the -config flag that every
// subcommand but ports takes.
func configFlags(name string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs, fs.String("config", defaultConfig, "config file")
}

// parseAndLoad parses args and loads the config -config names; on nil the
// command ends with code (exitFailure for bad flags, exitConfig for an
// invalid config, its problems printed).
func parseAndLoad(fs *flag.FlagSet, path *string, args []string, stderr io.Writer) (cfg *config.Config, code int) {
	if fs.Parse(args) != nil {
		return nil, exitFailure
	}
	cfg, ok := loadConfig(*path, stderr)
	if !ok {
		return nil, exitConfig
	}
	return cfg, exitOK
}

// loadConfig loads the config, printing every problem as PATH:LINE: key:
// message when it is not valid.
func loadConfig(path string, stderr io.Writer) (*config.Config, bool) {
	cfg, err := gateway.LoadConfig(path)
	if err != nil {
		printConfigErrors(stderr, err)
		return nil, false
	}
	return cfg, true
}

// printConfigErrors prints every problem as PATH:LINE: key: message.
func printConfigErrors(w io.Writer, err error) {
	ces := config.Errors(err)
	if len(ces) == 0 {
		fmt.Fprintln(w, err)
		return
	}
	for _, ce := range ces {
		fmt.Fprintln(w, ce)
	}
}

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs, path := configFlags("check", stderr)
	cfg, code := parseAndLoad(fs, path, args, stderr)
	if cfg == nil {
		return code
	}
	points := 0
	for _, d := range cfg.Devices {
		points += len(d.Points)
	}
	fmt.Fprintf(stdout, "%s: ok: %d buses, %d devices, %d points\n", *path, len(cfg.Buses), len(cfg.Devices), points)
	for _, b := range cfg.MQTT.Brokers {
		fmt.Fprintf(stdout, "broker %s: MQTT %s\n", b, protocolWords(cfg.MQTT.Protocol))
	}
	for i := range cfg.ModbusServers {
		m := &cfg.ModbusServers[i]
		writes := "writes refused"
		if m.Writes {
			writes = "writes passed to the bus"
		}
		fmt.Fprintf(stdout, "modbus server %s: bus %s, units %v, cache %s, %s, at most %d clients\n",
			m.Listen, m.Bus, cfg.ServedUnits(m), m.Cache, writes, m.MaxClients)
	}
	return exitOK
}

// protocolWords says what mqtt.protocol means for a broker.
func protocolWords(p string) string {
	if p == "auto" {
		return "5, or 3.1.1 if the broker refuses 5 (protocol = \"auto\")"
	}
	return p + " only (protocol = \"" + p + "\")"
}

func cmdRun(args []string, stderr io.Writer) int {
	fs, path := configFlags("run", stderr)
	debug := fs.Bool("debug", false, "log debug events")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile (pprof) to this file until the gateway stops")
	memProfile := fs.String("memprofile", "", "write an allocation profile (pprof, every allocation sampled) to this file when the gateway stops")
	cfg, code := parseAndLoad(fs, path, args, stderr)
	if cfg == nil {
		return code
	}
	log := newLogger(stderr, *debug)
	oneProc()
	if *cpuProfile != "" {
		stopProfile, err := profileCPU(*cpuProfile)
		if err != nil {
			log.Error("cpuprofile_failed", "file", *cpuProfile, "err", err)
			return exitFailure
		}
		defer stopProfile()
	}
	if *memProfile != "" {
		// Every allocation, so that the profile counts them per reading.
		runtime.MemProfileRate = 1
		defer func() {
			if err := writeAllocs(*memProfile); err != nil {
				log.Error("memprofile_failed", "file", *memProfile, "err", err)
			}
		}()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// SIGHUP reloads sensors.toml (systemctl reload edgegw).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reload := make(chan struct{}, 1)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				select {
				case reload <- struct{}{}:
				default: // one is pending already
				}
			}
		}
	}()
	watchdog, _ := daemon.SdWatchdogEnabled(false)
	opts := gateway.Options{Logger: log, Version: version, WatchdogInterval: watchdog,
		Reload: reload, Load: func() (*config.Config, error) { return gateway.LoadConfig(*path) }}
	if os.Getenv("NOTIFY_SOCKET") != "" {
		// Only systemd hears the STATUS line and the watchdog: without it
		// the loop that sends them (a wake-up every 10 s) does not run.
		opts.Notifier = systemd{}
	}
	if err := gateway.Run(ctx, cfg, opts); err != nil {
		log.Error("fatal", "err", err)
		return exitFailure
	}
	return exitOK
}

// oneProc runs the gateway's goroutines on one P (one thread at a time
// running Go code; system calls still wait in parallel) unless the
// GOMAXPROCS environment variable says otherwise. edgegw waits on buses,
// disk and brokers and computes little: with more Ps, every goroutine
// woken also wakes an idle thread to look for work, which finds none. One P
// cost less CPU (2-15 % at ten meters every 100 ms) and drained a backlog
// faster (docs/BENCHMARKS.md); single-core boards have one anyway.
func oneProc() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
}

// profileCPU starts a CPU profile into path; the func stops and writes it.
func profileCPU(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); _ = f.Close() }, nil
}

// writeAllocs writes the allocation profile so far into path.
func writeAllocs(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	err = pprof.Lookup("allocs").WriteTo(f, 0)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func cmdPorts(stdout, stderr io.Writer) int {
	ports, err := serial.Ports()
	if err != nil {
		fmt.Fprintln(stderr, "edgegw:", err)
		return exitFailure
	}
	if len(ports) == 0 {
		fmt.Fprintln(stdout, "no serial ports found")
	} else {
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "PORT\tUSB VID:PID\tSERIAL\tPRODUCT")
		for _, p := range ports {
			id := "-"
			if p.USB {
				id = p.VID + ":" + p.PID
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.Name, id, dash(p.SerialNumber), dash(p.Product))
		}
		tw.Flush()
	}
	// Stable names for a config: the board's aliases and udev's by-id links
	// (a USB adapter keeps its by-id name whichever ttyUSB it gets).
	byID, _ := filepath.Glob("/dev/serial/by-id/*")
	b := board.Select("auto")
	for _, name := range append(b.SerialPorts, byID...) {
		if target, err := filepath.EvalSymlinks(name); err == nil && target != name {
			fmt.Fprintf(stdout, "%s -> %s\n", name, target)
		}
	}
	return exitOK
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func cmdSimulate(args []string, stderr io.Writer) int {
	fs, path := configFlags("simulate", stderr)
	listen := fs.String("listen", "", "host:port to serve Modbus TCP on (default: the address of the first modbus-tcp bus, else 127.0.0.1:5020)")
	device := fs.String("device", "", "serve Modbus RTU or ASCII, as the config's first such bus says, on this serial port instead")
	cfg, code := parseAndLoad(fs, path, args, stderr)
	if cfg == nil {
		return code
	}
	log := newLogger(stderr, false)
	bus := gateway.Simulated(cfg)
	addr := *listen
	if addr == "" {
		addr = bus.Address
	}
	if addr == "" {
		addr = "127.0.0.1:5020"
	}
	sim, err := simulator.New(bus.Devices, addr, log)
	if err != nil {
		fmt.Fprintln(stderr, "edgegw:", err)
		return exitFailure
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *device != "" {
		return serveSerial(ctx, bus, sim, *device, stderr)
	}
	if err := sim.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(stderr, "edgegw:", err)
		return exitFailure
	}
	return exitOK
}

// serveSerial serves the simulator on a serial port with the line settings
// of the config's first RTU or ASCII bus.
func serveSerial(ctx context.Context, bus gateway.SimulatedBus, sim *simulator.Server, device string, stderr io.Writer) int {
	if bus.Line.Device == "" {
		fmt.Fprintln(stderr, "edgegw: -device: the config has no modbus-rtu or modbus-ascii bus to take line settings from")
		return exitFailure
	}
	p, err := port.Open(device, bus.Line.Mode())
	if err != nil {
		fmt.Fprintln(stderr, "edgegw:", err)
		return exitFailure
	}
	defer func() { _ = p.Close() }()
	if err := sim.ServeSerial(ctx, p, bus.ASCII); err != nil {
		fmt.Fprintln(stderr, "edgegw:", err)
		return exitFailure
	}
	return exitOK
}

func cmdScan(args []string, stdout, stderr io.Writer) int {
	fs, path := configFlags("scan", stderr)
	busName := fs.String("bus", "", "the [[bus]] to scan (required)")
	unitsArg := fs.String("units", "1-247", "unit ids to ask: 1-247, or a list like 1,2,10-20")
	timeout := fs.Duration("timeout", 100*time.Millisecond, "how long each unit id gets to answer")
	cfg, code := parseAndLoad(fs, path, args, stderr)
	if cfg == nil {
		return code
	}
	units, err := parseUnits(*unitsArg)
	if err != nil {
		fmt.Fprintln(stderr, "edgegw: -units:", err)
		return exitFailure
	}
	var bus *config.Bus
	for i := range cfg.Buses {
		if cfg.Buses[i].Name == *busName {
			bus = &cfg.Buses[i]
		}
	}
	if bus == nil {
		fmt.Fprintf(stderr, "edgegw: -bus: no [[bus]] named %q in %s\n", *busName, *path)
		return exitFailure
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(stdout, "scanning %d unit ids on %s (%s), %s each\n", len(units), bus.Name, bus.Protocol, *timeout)
	answered := 0
	err = gateway.Scan(ctx, cfg, bus.Name, units, *timeout, func(r modbus.ScanResult) {
		if r.Answered {
			answered++
			fmt.Fprintf(stdout, "unit %3d: answers (%s)\n", r.Unit, r.Detail)
		}
	})
	fmt.Fprintf(stdout, "%d of %d unit ids answered\n", answered, len(units))
	if err != nil {
		fmt.Fprintln(stderr, "edgegw:", err)
		return exitFailure
	}
	return exitOK
}

// parseUnits reads "1-247" or "1,2,10-20" into unit ids 0..247.
func parseUnits(s string) ([]int, error) {
	var units []int
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return nil, fmt.Errorf("%q is not a unit id or range", part)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil {
				return nil, fmt.Errorf("%q is not a unit id or range", part)
			}
		}
		if a < 0 || b > 247 || a > b {
			return nil, fmt.Errorf("%q: unit ids are 0..247", part)
		}
		for u := a; u <= b; u++ {
			units = append(units, u)
		}
	}
	return units, nil
}

// cmdBuffer says how many readings wait in the flash buffer. It opens the
// buffer as run does, so the gateway must be stopped (it holds the file's
// lock); run it as the user the gateway runs as.
func cmdBuffer(args []string, stdout, stderr io.Writer) int {
	fs, path := configFlags("buffer", stderr)
	count := fs.Bool("count", false, "print only the number of readings waiting")
	cfg, code := parseAndLoad(fs, path, args, stderr)
	if cfg == nil {
		return code
	}
	opts := gateway.BufferOptions(cfg, newLogger(stderr, false))
	opts.OpenTimeout = time.Second
	buf, err := buffer.Open(gateway.BufferPath(cfg), opts)
	if err != nil {
		fmt.Fprintf(stderr, "edgegw: %v (is the gateway running? it holds the buffer: systemctl stop edgegw)\n", err)
		return exitFailure
	}
	st := buf.Stats()
	if err := buf.Close(); err != nil {
		fmt.Fprintln(stderr, "edgegw:", err)
		return exitFailure
	}
	if *count {
		fmt.Fprintln(stdout, st.Readings)
		return exitOK
	}
	fmt.Fprintf(stdout, "%s: %d readings waiting to be sent", gateway.BufferPath(cfg), st.Readings)
	if st.Readings > 0 {
		fmt.Fprintf(stdout, ", the oldest taken %s ago", st.OldestAge.Round(time.Second))
	}
	fmt.Fprintf(stdout, "; file %d bytes\n", st.FileSize)
	return exitOK
}
