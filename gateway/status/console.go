package status

import (
	"embed"
	"io/fs"
	"net"
	"net/http"
)

// console is the commissioning page: static files, no build step; its data
// comes from /api/v1/status.
//
//go:embed console
var console embed.FS

// csp forbids inline script and style and every other origin: whatever a
// device or the config says is shown as text by the page's own script.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// consoleHandler serves the page's files with the policy.
func consoleHandler() http.Handler {
	files, _ := fs.Sub(console, "console") // a constant path in the embedded tree
	fileServer := http.FileServerFS(files)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		fileServer.ServeHTTP(w, r)
	})
}

// loopback reports whether a listener's address is on the loopback interface only.
func loopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}
