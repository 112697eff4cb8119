package kubetest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// HostIP returns an IPv4 address of this machine that is not loopback:
// the API refuses loopback addresses in EndpointSlices, so tests point
// them at processes listening on this one.
//
// Where there is none, as in a network namespace with only loopback,
// it adds an address itself if it may (as root): a random one from
// 198.18.0.0/15, the range set aside for tests, on lo, for as long as a
// test that asked for it runs. Each test process adds its own, so that
// test packages running at once do not remove each other's.
func HostIP(t testing.TB) string {
	t.Helper()
	ip, err := existingHostIP()
	if err != nil {
		t.Fatal(err)
	}
	if ip != "" {
		return ip
	}
	ip, err = loopbackExtra.acquire()
	if err != nil {
		t.Fatalf("this machine has no IPv4 address besides loopback, and adding one to lo failed: %v\n"+
			"EndpointSlices cannot hold loopback addresses, so these tests need a local IPv4 address that is not in 127.0.0.0/8. "+
			"Run them as root (kubetest then adds one to lo while they run), or have root give the machine one first, "+
			"for example: ip addr add 10.255.0.1/32 dev lo", err)
	}
	t.Cleanup(loopbackExtra.release)
	return ip
}

// kubetestRange holds the addresses that HostIP adds to lo.
var kubetestRange = netip.MustParsePrefix("198.18.0.0/15")

// existingHostIP returns an IPv4 address of an interface that is up and
// that an EndpointSlice accepts, preferring other interfaces to loopback
// ones, and skipping the addresses that test processes added to lo.
func existingHostIP() (string, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return "", err
	}
	var onLoopback string
	for _, iface := range ifaces {
		if iface.Flags&net.FlagUp == 0 {
			continue
		}
		addrs, _ := iface.Addrs()
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if ip = ip.Unmap(); !ok || !ip.Is4() || ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsUnspecified() {
				continue
			}
			if iface.Flags&net.FlagLoopback == 0 {
				return ip.String(), nil
			}
			if onLoopback == "" && !kubetestRange.Contains(ip) {
				onLoopback = ip.String()
			}
		}
	}
	return onLoopback, nil
}

// loopbackExtra is the address this process added to lo, shared by the
// tests that run at once.
var loopbackExtra extraAddr

type extraAddr struct {
	mu    sync.Mutex
	ip    string
	users int
}

func (a *extraAddr) acquire() (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.users > 0 {
		a.users++
		return a.ip, nil
	}
	base := kubetestRange.Addr().As4()
	var err error
	for range 10 {
		n := 1 + rand.IntN(1<<17-2) // 198.18.0.1 to 198.19.255.254
		ip := netip.AddrFrom4([4]byte{base[0], base[1] + byte(n>>16), byte(n >> 8), byte(n)}).String()
		if err = ipCommand("addr", "add", ip+"/32", "dev", "lo"); err == nil {
			a.ip, a.users = ip, 1
			return ip, nil
		}
		if !strings.Contains(err.Error(), "already assigned") && !strings.Contains(err.Error(), "exists") {
			break
		}
	}
	return "", err
}

func (a *extraAddr) release() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.users--; a.users == 0 {
		_ = ipCommand("addr", "del", a.ip+"/32", "dev", "lo")
		a.ip = ""
	}
}

// ipCommand runs ip(8) from iproute2.
func ipCommand(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
