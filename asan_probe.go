//go:build asan

package evlistener

/*
#include <stdlib.h>
#include <string.h>

// Deliberate memory errors of the kinds a cgo shim can make, to prove that
// the -asan build of the suite reports them. Built only with -asan.
static void evl_asan_overflow(void)
{
	char *p = malloc(16);
	volatile char *q = p;
	q[16] = 1; // one past the end, as a miscounted sockaddr copy would be
	free(p);
}

static void evl_asan_use_after_free(void)
{
	char *p = malloc(16);
	volatile char *q = p;
	free(p);
	q[0] = 1; // as a callback into an object already freed would be
}

static void evl_asan_leak(void)
{
	// As a shim that allocates and forgets would. Many blocks, so that
	// a stale copy of a pointer on some stack cannot hide them all.
	int i;
	for (i = 0; i < 64; i++) {
		char *volatile p = malloc(64 + i);
		p = NULL;
	}
}
*/
import "C"

// asanProbe commits the memory error named by kind in C. Test code only;
// cgo cannot be used in _test.go files.
func asanProbe(kind string) bool {
	switch kind {
	case "heap-buffer-overflow":
		C.evl_asan_overflow()
	case "heap-use-after-free":
		C.evl_asan_use_after_free()
	case "detected memory leaks":
		C.evl_asan_leak()
	default:
		return false
	}
	return true
}
