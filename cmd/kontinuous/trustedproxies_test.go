package main

import (
	"fmt"
	"strings"
	"testing"
)

func TestTrustedProxiesSetting(t *testing.T) {
	none := func(string) string { return "" }
	c, err := LoadConfig(nil, none, nil)
	if err != nil || c.TrustedProxies != nil {
		t.Fatalf("default: %v %v", c.TrustedProxies, err)
	}
	c, err = LoadConfig(nil, func(k string) string {
		return map[string]string{"KONTINUOUS_TRUSTED_PROXIES": "10.0.0.0/8, fd00::/8"}[k]
	}, nil)
	if err != nil || fmt.Sprint(c.TrustedProxies) != "[10.0.0.0/8 fd00::/8]" {
		t.Fatalf("env: %v %v", c.TrustedProxies, err)
	}
	c, err = LoadConfig([]string{"--trusted-proxies", "192.0.2.1"}, func(k string) string {
		return map[string]string{"KONTINUOUS_TRUSTED_PROXIES": "10.0.0.0/8"}[k]
	}, nil)
	if err != nil || fmt.Sprint(c.TrustedProxies) != "[192.0.2.1/32]" {
		t.Fatalf("flag over env: %v %v", c.TrustedProxies, err)
	}
	for _, bad := range []string{"10.0.0.0/33", "proxy.example.com", "10.1.2.3/8"} {
		_, err := LoadConfig([]string{"--trusted-proxies", bad}, none, nil)
		if err == nil || !strings.Contains(err.Error(), "--trusted-proxies") || !strings.Contains(err.Error(), "KONTINUOUS_TRUSTED_PROXIES") ||
			!strings.Contains(err.Error(), bad) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func TestBadTrustedProxiesIsOneStartUpLineThroughTheBinary(t *testing.T) {
	code, _, stderr := runBinary(t, "", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--trusted-proxies", "10.0.0.0/8,not-a-cidr")
	if code != 2 { // a bad setting exits 2, like the others
		t.Fatalf("exit %d, want 2; stderr:\n%s", code, stderr)
	}
	oneLine(t, stderr, "--trusted-proxies", "KONTINUOUS_TRUSTED_PROXIES", `"not-a-cidr"`)
}
