package pipelinetest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Ports for the test etcds are picked outside the kernel's ephemeral port
// range. A port the kernel hands out for ":0" lies inside that range, so
// between the pick and etcd's bind (or while a test has etcd stopped)
// any outgoing connection of the machine may take it as its source port,
// and etcd then fails with "address already in use". A port below the
// range is never taken that way: only another listener could take it,
// and the pick checks that none has, then etcd's start retries.

// portRange is [lo, hi) of the ports picked.
var portRange = sync.OnceValues(func() (int, int) {
	lo := 32768 // Linux's default ephemeral range starts here
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 12000 {
				lo = n
			}
		}
	}
	return 10000, lo
})

// pickedPorts remembers every port handed out in this process, so that
// two etcds of one test binary never get the same one.
var pickedPorts sync.Map // int → struct{}

// freePorts returns n distinct loopback ports outside the ephemeral
// range that nothing listens on right now.
func freePorts(n int) ([]int, error) {
	lo, hi := portRange()
	var out []int
	for tries := 0; len(out) < n; tries++ {
		if tries > 1000 {
			return nil, fmt.Errorf("free port: no free loopback port in [%d, %d) after %d tries", lo, hi, tries)
		}
		p := lo + rand.IntN(hi-lo)
		if _, taken := pickedPorts.LoadOrStore(p, struct{}{}); taken {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue // another process listens there
		}
		// Closed at once to free the port for etcd; outside the ephemeral
		// range no outgoing connection takes it meanwhile.
		_ = l.Close()
		out = append(out, p)
	}
	return out, nil
}

// addrInUse reports whether err is a bind failing on a taken port.
func addrInUse(err error) bool {
	return err != nil && (errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use"))
}

// retryInUse calls start until it succeeds, fails otherwise than on a
// taken port, or within has passed; the pauses grow to a second.
func retryInUse(within time.Duration, start func() error) error {
	deadline := time.Now().Add(within)
	pause := 50 * time.Millisecond
	for {
		err := start()
		if !addrInUse(err) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(pause)
		pause = min(2*pause, time.Second)
	}
}
