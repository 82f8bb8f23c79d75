package main

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The --help text is kept in testdata/help.golden: a change to it is a
// change users see. UPDATE_GOLDEN=1 rewrites the file.
func TestHelpOutputIsTheGoldenOne(t *testing.T) {
	var out bytes.Buffer
	if _, err := LoadConfig([]string{"--help"}, func(string) string { return "" }, &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	golden := filepath.Join("testdata", "help.golden")
	if os.Getenv("UPDATE_GOLDEN") != "" {
		if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != string(want) {
		t.Fatalf("--help changed (UPDATE_GOLDEN=1 if intended):\n%s", out.String())
	}
}

// Every row of the settings table is a complete setting (flag, env, help,
// load) or a check; every setting is in --help with its env names.
func TestEverySettingRowIsCompleteAndListed(t *testing.T) {
	var out bytes.Buffer
	_, _ = LoadConfig([]string{"--help"}, func(string) string { return "" }, &out)
	seen := map[string]bool{}
	for i, s := range settings {
		if s.flag == "" {
			if s.check == nil || s.load != nil || len(s.env) > 0 {
				t.Errorf("row %d: a row without a flag must be a check only", i)
			}
			continue
		}
		if seen[s.flag] {
			t.Errorf("--%s is in the table twice", s.flag)
		}
		seen[s.flag] = true
		if len(s.env) == 0 || s.help == "" || s.load == nil || s.check != nil {
			t.Errorf("--%s: needs env, help and load (and no check)", s.flag)
		}
		if !strings.Contains(out.String(), "-"+s.flag+" ") && !strings.Contains(out.String(), "-"+s.flag+"\n") {
			t.Errorf("--help does not list --%s", s.flag)
		}
		if !strings.Contains(out.String(), "env "+strings.Join(s.env, ", ")) {
			t.Errorf("--help does not name the env of --%s", s.flag)
		}
	}
}

// A check row names the setting at fault, with that setting's env.
func TestCrossSettingProblemsNameTheSettingAtFault(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls-key", "k.pem"}, "setting --tls-cert (CERT_FILE): --tls-cert and --tls-key must be set together"},
		{[]string{"--etcd-ca", "ca.pem"}, "setting --etcd-ca (ETCD_CA): TLS settings need --etcd-endpoints"},
		{[]string{"--auth0-jwks-url", "https://t.example/jwks"}, "setting --auth0-issuer (AUTH0_ISSUER): required when --auth0-audience or --auth0-jwks-url is set"},
		{[]string{"--bitbucket-dc-client-id", "a", "--bitbucket-dc-client-secret", "b"}, "setting --bitbucket-dc-url (BITBUCKET_DC_URL): required when --bitbucket-dc-client-id is set"},
		{[]string{"--max-streams", "5"}, "setting --max-streams-per-user (KONTINUOUS_MAX_STREAMS_PER_USER): 20 is more than --max-streams (5)"},
		{[]string{"--auth-secret", "c2hvcnQ="}, "setting --auth-secret (AUTH_SECRET): decodes to 5 bytes; need at least 32 (e.g. `openssl rand -base64 48`)"},
	} {
		_, err := LoadConfig(tc.args, func(string) string { return "" }, nil)
		if err == nil || err.Error() != tc.want {
			t.Errorf("%v: err = %v\nwant %s", tc.args, err, tc.want)
		}
	}
}
