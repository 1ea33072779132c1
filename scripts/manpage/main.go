// Command manpage writes edgegw's manual pages from the files the rest of
// the project reads, so they cannot drift: edgegw(1) from the command
// summary the binary prints (cmd/edgegw/usage.txt), sensors.toml(5) from
// docs/CONFIG.md (the subset of Markdown that file uses: headings,
// paragraphs, lists, tables, inline code, bold and links).
//
//	go run ./scripts/manpage -version V -out DIR
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

func main() {
	version := flag.String("version", "dev", "version shown in the pages' footer")
	out := flag.String("out", ".", "directory for edgegw.1 and sensors.toml.5")
	root := flag.String("root", ".", "the repository")
	flag.Parse()
	if err := run(*root, *out, *version); err != nil {
		fmt.Fprintln(os.Stderr, "manpage:", err)
		os.Exit(1)
	}
}

func run(root, out, version string) error {
	usage, err := os.ReadFile(filepath.Join(root, "cmd/edgegw/usage.txt"))
	if err != nil {
		return err
	}
	config, err := os.ReadFile(filepath.Join(root, "docs/CONFIG.md"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "edgegw.1"), []byte(commandPage(string(usage), version)), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(out, "sensors.toml.5"), []byte(configPage(string(config), version)), 0o644)
}

func header(name, section, version, title string) string {
	return fmt.Sprintf(".TH %s %s \"\" \"edgegw %s\" %q\n", strings.ToUpper(name), section, escape(version), title)
}

// commandPage is edgegw(1): the usage text, framed.
func commandPage(usage, version string) string {
	var b strings.Builder
	b.WriteString(header("edgegw", "1", version, "edgegw manual"))
	b.WriteString(".SH NAME\nedgegw \\- edge gateway: Modbus and serial sensors to MQTT, every reading kept on flash\n")
	b.WriteString(".SH SYNOPSIS\n.B edgegw\n.I command\n.RI [ flags ]\n")
	b.WriteString(".SH DESCRIPTION\nedgegw reads the sensors that\n.BR sensors.toml (5)\n" +
		"describes, keeps every reading in a crash-safe buffer on flash while the network is down, " +
		"and publishes the readings to MQTT brokers. It runs as the systemd service edgegw.\n")
	b.WriteString(".SH COMMANDS\n.nf\n")
	for _, line := range strings.Split(strings.TrimRight(usage, "\n"), "\n") {
		b.WriteString(escapeLine(line) + "\n")
	}
	b.WriteString(".fi\n")
	b.WriteString(".SH EXIT STATUS\n.TP\n0\nsuccess\n.TP\n1\nthe config is not valid: every problem is printed as FILE:LINE: key: message " +
		"(the service is not restarted until it is fixed)\n.TP\n2\nany other failure\n")
	b.WriteString(".SH SIGNALS\n.TP\nSIGHUP\nreload sensors.toml (systemctl reload edgegw)\n" +
		".TP\nSIGINT, SIGTERM\nstop cleanly: every reading taken is committed first\n")
	b.WriteString(".SH FILES\n.TP\n/etc/edgegw/sensors.toml\nthe configuration\n" +
		".TP\n/var/lib/edgegw\nthe flash buffer (gateway.data_dir)\n")
	b.WriteString(".SH SEE ALSO\n.BR sensors.toml (5),\n.BR journalctl (1),\n.BR systemctl (1)\n")
	return b.String()
}

var (
	code   = regexp.MustCompile("`([^`]*)`")
	bold   = regexp.MustCompile(`\*\*([^*]+)\*\*`)
	link   = regexp.MustCompile(`\[([^\]]+)\]\([^)]+\)`)
	bullet = regexp.MustCompile(`^(\s*)[-*] (.*)$`)
)

// configPage is sensors.toml(5) from docs/CONFIG.md.
func configPage(md, version string) string {
	var b strings.Builder
	b.WriteString(header("sensors.toml", "5", version, "edgegw manual"))
	b.WriteString(".SH NAME\nsensors.toml \\- edgegw configuration\n.SH DESCRIPTION\n")
	sc := bufio.NewScanner(strings.NewReader(md))
	var table [][]string
	flush := func() {
		if len(table) > 0 {
			writeTable(&b, table)
			table = nil
		}
	}
	first := true
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "|") {
			table = append(table, cells(line))
			continue
		}
		flush()
		switch {
		case strings.HasPrefix(line, "# "):
			if !first {
				b.WriteString(".SH " + inline(strings.ToUpper(line[2:])) + "\n")
			}
		case strings.HasPrefix(line, "## "):
			b.WriteString(".SH " + inline(line[3:]) + "\n")
		case strings.HasPrefix(line, "### "):
			b.WriteString(".SS " + inline(line[4:]) + "\n")
		case strings.TrimSpace(line) == "":
			b.WriteString(".PP\n")
		case bullet.MatchString(line):
			m := bullet.FindStringSubmatch(line)
			b.WriteString(".IP \\(bu 2\n" + inline(m[2]) + "\n")
		default:
			b.WriteString(inline(strings.TrimSpace(line)) + "\n")
		}
		first = false
	}
	flush()
	b.WriteString(".SH SEE ALSO\n.BR edgegw (1)\n")
	return b.String()
}

func cells(line string) []string {
	parts := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return parts
}

// writeTable writes a key table (key | default | meaning) as tagged
// paragraphs: the key, then its default and meaning.
func writeTable(b *strings.Builder, rows [][]string) {
	for i, r := range rows {
		if i == 0 || strings.Trim(strings.Join(r, ""), "-: ") == "" {
			continue // the header and its rule
		}
		b.WriteString(".TP\n" + inline(r[0]) + "\n")
		rest := r[1:]
		if len(rest) == 2 && len(rows[0]) == 3 && strings.EqualFold(rows[0][1], "default") {
			def := rest[0]
			if def == "" {
				def = "none"
			}
			b.WriteString("Default: " + inline(def) + ".\n.br\n")
			rest = rest[1:]
		}
		b.WriteString(inline(strings.Join(rest, "; ")) + "\n")
	}
}

// inline turns Markdown's inline marks into roff fonts.
func inline(s string) string {
	s = link.ReplaceAllString(s, "$1")
	s = escape(s)
	s = code.ReplaceAllString(s, `\fB$1\fR`)
	s = bold.ReplaceAllString(s, `\fB$1\fR`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

func escapeLine(s string) string {
	s = escape(s)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

// escape protects roff's escape character and the dash.
func escape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	return strings.ReplaceAll(s, "-", `\-`)
}
