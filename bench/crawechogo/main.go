// Command crawechogo is crawecho, compiled from the same C file, run from a
// Go process: main calls crawecho's own main through cgo, and libevent's loop
// is that one cgo call. Against crawecho it measures what a Go process costs
// a C server by being one (the runtime's threads, its signal handling, the
// binary's layout), apart from anything the binding does: bench/README.md,
// "A connection at C's cost, continued". The runner knows it as crawecho-go.
package main

/*
#cgo pkg-config: libevent_core
#cgo CFLAGS: -O2 -Wall
#define main crawecho_main
#include "../csrc/crawecho.c"
#undef main
#include "../csrc/echocli.c"
*/
import "C"

import (
	"os"
	"unsafe"
)

func main() {
	argv := make([]*C.char, len(os.Args)+1) // C strings: no Go pointer inside
	for i, a := range os.Args {
		argv[i] = C.CString(a)
	}
	os.Exit(int(C.crawecho_main(C.int(len(os.Args)), (**C.char)(unsafe.Pointer(&argv[0])))))
}
