package evlistener

import (
	"strconv"
	"strings"
)

// Flag is a set of listener options. Each constant has the value of the
// LEV_OPT_* bit of libevent 2.1 it stands for, so a Flag can be passed
// unchanged to C code that shares the listener.
type Flag uint

const (
	// LeaveSocketsBlocking leaves accepted sockets in blocking mode
	// (LEV_OPT_LEAVE_SOCKETS_BLOCKING). By default they are non-blocking.
	LeaveSocketsBlocking Flag = 1 << 0
	// CloseOnFree closes the listening socket when the listener is closed
	// (LEV_OPT_CLOSE_ON_FREE).
	CloseOnFree Flag = 1 << 1
	// CloseOnExec sets close-on-exec on accepted sockets, and on the
	// listening socket NewBind creates (LEV_OPT_CLOSE_ON_EXEC).
	CloseOnExec Flag = 1 << 2
	// Reuseable sets SO_REUSEADDR on the socket NewBind creates
	// (LEV_OPT_REUSEABLE). It does not let two live listeners share a port.
	Reuseable Flag = 1 << 3
	// ThreadSafe gives the listener a lock (LEV_OPT_THREADSAFE). The
	// binding always sets it; passing it is allowed and changes nothing.
	ThreadSafe Flag = 1 << 4
	// Disabled creates the listener disabled (LEV_OPT_DISABLED); Enable
	// starts it.
	Disabled Flag = 1 << 5
	// DeferredAccept sets TCP_DEFER_ACCEPT on the socket NewBind creates
	// (LEV_OPT_DEFERRED_ACCEPT): connections are reported only once the
	// client has sent data. Use it only for client-speaks-first protocols.
	DeferredAccept Flag = 1 << 6
	// ReuseablePort sets SO_REUSEPORT on the socket NewBind creates
	// (LEV_OPT_REUSEABLE_PORT), so several listeners can share one port.
	ReuseablePort Flag = 1 << 7
	// BindIPv6Only sets IPV6_V6ONLY on the IPv6 socket NewBind creates
	// (LEV_OPT_BIND_IPV6ONLY).
	BindIPv6Only Flag = 1 << 8
)

var flagNames = [...]string{
	"LeaveSocketsBlocking",
	"CloseOnFree",
	"CloseOnExec",
	"Reuseable",
	"ThreadSafe",
	"Disabled",
	"DeferredAccept",
	"ReuseablePort",
	"BindIPv6Only",
}

// knownFlags holds every bit that libevent 2.1.12 defines.
const knownFlags Flag = 1<<len(flagNames) - 1

// String names the set bits joined by "|", as in "CloseOnFree|Reuseable".
// Bits libevent 2.1 does not define are shown in hex; the empty set is "0".
func (f Flag) String() string {
	if f == 0 {
		return "0"
	}
	var parts []string
	for i, name := range flagNames {
		if f&(1<<i) != 0 {
			parts = append(parts, name)
		}
	}
	if rest := f &^ knownFlags; rest != 0 {
		parts = append(parts, "0x"+strconv.FormatUint(uint64(rest), 16))
	}
	return strings.Join(parts, "|")
}
