// Command copyright writes the machine-readable debian/copyright of a
// built edgegw binary: edgegw's own licence, then each Go module compiled
// into it (as `go version -m` lists them) and Go's standard library, with
// the licence text found in the module cache. A module whose licence it
// cannot name stops the build: a new dependency's licence is read by a
// person before it ships.
//
//	go run ./scripts/copyright BINARY > copyright
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"unicode"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: copyright BINARY")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "copyright:", err)
		os.Exit(1)
	}
}

type module struct{ path, version, dir string }

func run(binary string) error {
	mods, err := modules(binary)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(os.Stdout)
	fmt.Fprint(w, `Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: edgegw
Comment: edgegw is one static Go binary. The Go modules below, and Go's
 standard library, are compiled into /usr/bin/edgegw; their Files patterns
 name their import paths. Generated at build time by scripts/copyright from
 the licence files of the modules built.

Files: *
Copyright: the edgegw authors
License: Apache-2.0
`)
	for _, m := range mods {
		parts, err := licences(m)
		if err != nil {
			return fmt.Errorf("%s@%s: %w", m.path, m.version, err)
		}
		for _, p := range parts {
			name, err := classify(p.text)
			if err != nil {
				return fmt.Errorf("%s@%s: %s: %w", m.path, m.version, p.files, err)
			}
			fmt.Fprintf(w, "\nFiles: %s\nCopyright: %s\nLicense: %s\n", p.files, holders(p.text, m.path), name)
			if !commonLicence[name] {
				fmt.Fprint(w, indent(p.text))
			}
		}
	}
	fmt.Fprint(w, `
License: Apache-2.0
 On Debian systems, the full text of the Apache License, Version 2.0 can be
 found in /usr/share/common-licenses/Apache-2.0.
`)
	return w.Flush()
}

// commonLicence are the licences Debian ships in /usr/share/common-licenses,
// referred to once at the end instead of copied.
var commonLicence = map[string]bool{"Apache-2.0": true}

// modules lists the modules compiled into binary, Go's standard library
// first, with their directories in the module cache.
func modules(binary string) ([]module, error) {
	out, err := exec.Command("go", "version", "-m", binary).Output()
	if err != nil {
		return nil, fmt.Errorf("go version -m %s: %w", binary, err)
	}
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		return nil, err
	}
	cache, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		return nil, err
	}
	mods := []module{{path: "go.dev/std", version: "go", dir: strings.TrimSpace(string(goroot))}}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "dep" && f[0] != "=>" {
			continue
		}
		if f[0] == "=>" { // a replacement: the module built is this one
			mods = mods[:len(mods)-1]
		}
		dir := filepath.Join(strings.TrimSpace(string(cache)), escape(f[1])+"@"+escape(f[2]))
		mods = append(mods, module{path: f[1], version: f[2], dir: dir})
	}
	return mods, nil
}

// escape is the module cache's case encoding: "A" is stored as "!a".
func escape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if unicode.IsUpper(r) {
			b.WriteByte('!')
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// part is the licence of some of a module's files.
type part struct{ files, text string }

// licences returns the licence of module m and, after it, those of its
// directories that carry their own (Go's standard library: its own only).
// A licence file that lists sections for some directories ("Files: dir/*")
// counts for the rest of the module up to its first section; each
// section's directory must then hold its own licence file.
func licences(m module) ([]part, error) {
	text, err := licenceText(m.dir)
	if err != nil {
		return nil, err
	}
	text, sections := splitSections(text)
	parts := []part{{files: m.path + "/*", text: text}}
	if m.path == "go.dev/std" {
		return parts, nil
	}
	nested := map[string]bool{}
	err = filepath.WalkDir(m.dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == "testdata" || d.Name() == "vendor" {
				return filepath.SkipDir
			}
			if path == m.dir {
				return nil
			}
			sub, err := licenceText(path)
			if err != nil {
				return nil // no licence of its own
			}
			rel, _ := filepath.Rel(m.dir, path)
			nested[filepath.ToSlash(rel)] = true
			parts = append(parts, part{files: m.path + "/" + filepath.ToSlash(rel) + "/*", text: sub})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, s := range sections {
		if !nested[strings.TrimSuffix(s, "/*")] {
			return nil, fmt.Errorf("the licence file has a section for %s but that directory has no licence file: read it and extend scripts/copyright", s)
		}
	}
	return parts, nil
}

// sectionStart is a line "Files: dir/*" that opens a section of a licence
// file holding several licences.
var sectionStart = regexp.MustCompile(`(?m)^Files:\s+(\S+)\s*$`)

// splitSections returns the text before a licence file's first section,
// without the separator line of dashes, and each section's pattern.
func splitSections(text string) (head string, sections []string) {
	loc := sectionStart.FindStringIndex(text)
	if loc == nil {
		return text, nil
	}
	for _, m := range sectionStart.FindAllStringSubmatch(text, -1) {
		sections = append(sections, m[1])
	}
	head = strings.TrimRight(text[:loc[0]], "-\n \t")
	return head, sections
}

func licenceText(dir string) (string, error) {
	for _, name := range []string{"LICENSE", "LICENSE.txt", "LICENSE.md", "COPYING", "LICENCE"} {
		if b, err := os.ReadFile(filepath.Join(dir, name)); err == nil {
			return strings.TrimSpace(string(b)), nil
		}
	}
	return "", fmt.Errorf("no licence file in %s", dir)
}

// classify names a licence text with its SPDX/Debian short name.
// A text that matches several licences (several licence files in one) is
// refused: which part covers what must be read by a person.
func classify(text string) (string, error) {
	has := func(s string) bool { return strings.Contains(text, s) }
	if has("Eclipse Public License") && has("Eclipse Distribution License") {
		return "EPL-2.0 or BSD-3-clause", nil // the EDL 1.0 is the 3-clause BSD licence
	}
	var found []string
	switch {
	case has("Redistribution and use in source and binary forms") && (has("Neither the name") || has("may be used to endorse")):
		found = append(found, "BSD-3-clause")
	case has("Redistribution and use in source and binary forms"):
		found = append(found, "BSD-2-clause")
	}
	for _, l := range []struct{ name, marker string }{
		{"Apache-2.0", "Apache License"},
		{"Expat", "Permission is hereby granted, free of charge"},
		{"MPL-2.0", "Mozilla Public License"},
		{"ISC", "Permission to use, copy, modify, and/or distribute"},
	} {
		if has(l.marker) {
			found = append(found, l.name)
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("licence not recognised: read it and add it to scripts/copyright")
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("one licence file holds several licences (%s): read it and extend scripts/copyright", strings.Join(found, ", "))
}

var copyrightLine = regexp.MustCompile(`(?im)^\s*copyright\s+(?:\(c\)|©)?\s*(.*\d{4}.*)$`)

// holders are the licence's own "Copyright ..." lines, or the module's
// authors when it has none.
func holders(text, path string) string {
	var out []string
	for _, m := range copyrightLine.FindAllStringSubmatch(text, -1) {
		if h := strings.TrimSpace(m[1]); h != "" && !strings.Contains(strings.ToLower(h), "license") {
			out = append(out, h)
		}
	}
	if len(out) == 0 {
		return "the authors of " + path
	}
	return strings.Join(out, "\n ")
}

// indent formats a licence text as the continuation lines of a field: one
// space in front, "." for an empty line.
func indent(text string) string {
	var b bytes.Buffer
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimRight(line, " \t\r")
		if line == "" {
			b.WriteString(" .\n")
			continue
		}
		b.WriteString(" " + line + "\n")
	}
	return b.String()
}
