//go:build !amd64 && !arm64

package goid

import (
	"runtime"
	"strconv"
	"strings"
)

// getg parses the goroutine id from runtime.Stack: slower than the assembly
// versions, but portable.
func getg() uintptr {
	var buf [64]byte
	s := string(buf[:runtime.Stack(buf[:], false)])
	s = strings.TrimPrefix(s, "goroutine ")
	if i := strings.IndexByte(s, ' '); i > 0 {
		s = s[:i]
	}
	id, _ := strconv.ParseUint(s, 10, 64)
	return uintptr(id)
}
