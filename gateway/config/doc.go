// Package config is sensors.toml: its schema (Config and the tables under
// it), the one table of defaults, a TOML reader that keeps the line of
// every key, validation that reports every problem with file, line and key
// (Error, joined), device profiles, and the secrets the file names.
//
// It promises: Load and Parse touch no hardware and no network; what they
// accept, run accepts too (the password and TLS files are read here, and
// each bus's driver checks its part through the BusCheck the gateway
// passes). It knows no wire protocol: an empty point type or table means
// "the driver's default", and protocol-specific keys are checked by the
// driver packages.
package config
