package evlistener

/*
#include <stdlib.h>
#include <string.h>
*/
import "C"

import "unsafe"

// withCBytes copies b into C memory of exactly len(b) bytes and calls f with
// it, as libevent hands the accept callback a socket address in its own
// memory: under -asan, a read past the end is reported. Test code only;
// cgo cannot be used in _test.go files.
func withCBytes(b []byte, f func(p unsafe.Pointer)) {
	p := C.malloc(C.size_t(max(len(b), 1)))
	defer C.free(p)
	if len(b) > 0 {
		C.memcpy(p, unsafe.Pointer(&b[0]), C.size_t(len(b)))
	}
	f(p)
}
