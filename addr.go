package evlistener

import (
	"errors"
	"net"
	"strconv"
	"sync"
	"syscall"
	"unsafe"
)

// sockaddrToAddr copies the socket address libevent passes to the accept
// callback (valid only during the call) into a *net.TCPAddr or *net.UnixAddr.
func sockaddrToAddr(sa unsafe.Pointer, n int) net.Addr {
	if sa == nil || n < 2 {
		return nil
	}
	switch *(*uint16)(sa) {
	case syscall.AF_INET:
		if n < syscall.SizeofSockaddrInet4 {
			return nil
		}
		raw := (*syscall.RawSockaddrInet4)(sa)
		a := new(tcpAddrBuf)
		a.TCPAddr = net.TCPAddr{IP: a.ip[:4], Port: ntohs(raw.Port)}
		copy(a.ip[:], raw.Addr[:])
		return &a.TCPAddr
	case syscall.AF_INET6:
		if n < syscall.SizeofSockaddrInet6 {
			return nil
		}
		raw := (*syscall.RawSockaddrInet6)(sa)
		a := new(tcpAddrBuf)
		a.TCPAddr = net.TCPAddr{IP: a.ip[:], Port: ntohs(raw.Port)}
		copy(a.ip[:], raw.Addr[:])
		if raw.Scope_id != 0 {
			a.Zone = zoneName(int(raw.Scope_id))
		}
		return &a.TCPAddr
	case syscall.AF_UNIX:
		raw := (*syscall.RawSockaddrUnix)(sa)
		size := n - 2
		if size > len(raw.Path) {
			size = len(raw.Path)
		}
		path := make([]byte, 0, size)
		for i := 0; i < size; i++ {
			c := byte(raw.Path[i])
			if c == 0 && i > 0 {
				break
			}
			if c == 0 {
				c = '@' // abstract socket, as net shows it
			}
			path = append(path, c)
		}
		return &net.UnixAddr{Name: string(path), Net: "unix"}
	}
	return nil
}

// tcpAddrBuf holds a peer address and its IP bytes in one allocation.
type tcpAddrBuf struct {
	net.TCPAddr
	ip [16]byte
}

func ntohs(p uint16) int {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return int(b[0])<<8 | int(b[1])
}

func zoneName(index int) string {
	if ifi, err := net.InterfaceByIndex(index); err == nil {
		return ifi.Name
	}
	return strconv.Itoa(index)
}

// sockname returns the local address of fd, or nil.
func sockname(fd int) net.Addr {
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		return nil
	}
	switch sa := sa.(type) {
	case *syscall.SockaddrInet4:
		return &net.TCPAddr{IP: append(net.IP(nil), sa.Addr[:]...), Port: sa.Port}
	case *syscall.SockaddrInet6:
		a := &net.TCPAddr{IP: append(net.IP(nil), sa.Addr[:]...), Port: sa.Port}
		if sa.ZoneId != 0 {
			a.Zone = zoneName(int(sa.ZoneId))
		}
		return a
	case *syscall.SockaddrUnix:
		return &net.UnixAddr{Name: sa.Name, Net: "unix"}
	}
	return nil
}

// sockaddr is an address resolved for the kernel, in the form bind(2) and
// connect(2) take it: what NewBind binds to and Connect connects to.
type sockaddr struct {
	raw  syscall.RawSockaddrAny
	len  int
	addr net.Addr // what errors and Addr report
}

// resolveSockaddr turns network and address, as net.Listen and net.Dial
// take them, into a socket address. Host names are resolved; an empty host
// means all local addresses ("::" dual-stack for "tcp", as net.Listen does).
func resolveSockaddr(network, address string) (*sockaddr, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
		ta, err := net.ResolveTCPAddr(network, address)
		if err != nil {
			var ae *net.AddrError
			if errors.As(err, &ae) {
				return nil, ae
			}
			return nil, err
		}
		return inetSockaddr(network, ta), nil
	case "unix":
		return unixSockaddr(address)
	}
	return nil, net.UnknownNetworkError(network)
}

func inetSockaddr(network string, ta *net.TCPAddr) *sockaddr {
	ba := &sockaddr{}
	ip4 := ta.IP.To4()
	useV4 := network == "tcp4" || (ip4 != nil && network != "tcp6") ||
		(len(ta.IP) == 0 && network == "tcp" && !supportsIPv6())
	if useV4 {
		raw := (*syscall.RawSockaddrInet4)(unsafe.Pointer(&ba.raw))
		raw.Family = syscall.AF_INET
		raw.Port = htons(ta.Port)
		if ip4 != nil {
			copy(raw.Addr[:], ip4)
		}
		ba.len = syscall.SizeofSockaddrInet4
		ba.addr = &net.TCPAddr{IP: net.IP(append([]byte(nil), raw.Addr[:]...)), Port: ta.Port}
		return ba
	}
	raw := (*syscall.RawSockaddrInet6)(unsafe.Pointer(&ba.raw))
	raw.Family = syscall.AF_INET6
	raw.Port = htons(ta.Port)
	if len(ta.IP) != 0 {
		copy(raw.Addr[:], ta.IP.To16())
	}
	if ta.Zone != "" {
		if ifi, err := net.InterfaceByName(ta.Zone); err == nil {
			raw.Scope_id = uint32(ifi.Index)
		} else if n, err := strconv.Atoi(ta.Zone); err == nil {
			raw.Scope_id = uint32(n)
		}
	}
	ba.len = syscall.SizeofSockaddrInet6
	ba.addr = &net.TCPAddr{IP: net.IP(append([]byte(nil), raw.Addr[:]...)), Port: ta.Port, Zone: ta.Zone}
	return ba
}

func unixSockaddr(path string) (*sockaddr, error) {
	ba := &sockaddr{addr: &net.UnixAddr{Name: path, Net: "unix"}}
	raw := (*syscall.RawSockaddrUnix)(unsafe.Pointer(&ba.raw))
	if path == "" {
		return nil, &net.AddrError{Err: "empty unix socket path", Addr: path}
	}
	if len(path) >= len(raw.Path) {
		return nil, &net.AddrError{Err: "unix socket path too long", Addr: path}
	}
	for i := 0; i < len(path); i++ {
		if path[i] == 0 {
			return nil, &net.AddrError{Err: "unix socket path contains a NUL byte", Addr: path}
		}
		raw.Path[i] = int8(path[i])
	}
	if path[0] == '@' {
		raw.Path[0] = 0 // abstract socket, as net.Listen does it
	}
	raw.Family = syscall.AF_UNIX
	ba.len = 2 + len(path)
	if path[0] != '@' {
		ba.len++ // the terminating NUL
	}
	return ba, nil
}

func htons(port int) uint16 {
	var p uint16
	b := (*[2]byte)(unsafe.Pointer(&p))
	b[0], b[1] = byte(port>>8), byte(port)
	return p
}

// supportsIPv6 reports whether this host can open IPv6 sockets.
var supportsIPv6 = sync.OnceValue(func() bool {
	fd, err := syscall.Socket(syscall.AF_INET6, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return false
	}
	syscall.Close(fd)
	return true
})
