package config

import "embed"

// packagedProfiles are the device profiles built into the binary, from the
// makers' public register maps; a file of the same name in profiles_dir
// takes precedence.
//
//go:embed profiles/*.toml
var packagedProfiles embed.FS
