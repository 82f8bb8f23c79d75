package etcdstore_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/etcdstore"
	"github.com/kontinuous/kontinuous/pipeline/secretbox"
)

func TestSecretsCRUDKeepsPipelineNamesInStep(t *testing.T) {
	s := newStore(t)
	mustCreatePipeline(t, s, "acme", "app")
	put := func(name string, data map[string]string) {
		t.Helper()
		if err := s.PutSecret(t.Context(), "Acme", "APP", pipeline.SecretSet{Name: name, Data: data}); err != nil {
			t.Fatalf("PutSecret(%s): %v", name, err)
		}
	}
	names := func() []string {
		t.Helper()
		p, err := s.GetPipeline(t.Context(), "acme", "app")
		if err != nil {
			t.Fatal(err)
		}
		return p.Secrets
	}
	put("zeta", map[string]string{"Z": "1"})
	put("alpha", map[string]string{"B": "2", "A": "1"})
	put("alpha", map[string]string{"TOKEN": "replaced"}) // replace, not add
	if diff := cmp.Diff([]string{"alpha", "zeta"}, names()); diff != "" {
		t.Errorf("pipeline secret names (-want +got):\n%s", diff)
	}

	got, err := s.GetSecret(t.Context(), "acme", "app", "alpha")
	if err != nil {
		t.Fatal(err)
	}
	want := pipeline.SecretSet{Name: "alpha", Data: map[string]string{"TOKEN": "replaced"}, Keys: []string{"TOKEN"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GetSecret (-want +got):\n%s", diff)
	}
	list, err := s.ListSecrets(t.Context(), "acme", "app")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "alpha" || list[1].Name != "zeta" || list[1].Data["Z"] != "1" {
		t.Errorf("ListSecrets = %+v, want alpha and zeta with data", list)
	}

	if err := s.DeleteSecret(t.Context(), "acme", "app", "alpha"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"zeta"}, names()); diff != "" {
		t.Errorf("names after delete (-want +got):\n%s", diff)
	}
	_, err = s.GetSecret(t.Context(), "acme", "app", "alpha")
	wantErr(t, err, pipeline.ErrNotFound)
	wantErr(t, s.DeleteSecret(t.Context(), "acme", "app", "alpha"), pipeline.ErrNotFound)
}

func TestSecretsOfMissingPipelineAreNotFound(t *testing.T) {
	s := newStore(t)
	wantErr(t, s.PutSecret(t.Context(), "acme", "none", pipeline.SecretSet{Name: "x", Data: map[string]string{"K": "v"}}), pipeline.ErrNotFound)
	_, err := s.ListSecrets(t.Context(), "acme", "none")
	wantErr(t, err, pipeline.ErrNotFound)
	wantErr(t, s.DeleteSecret(t.Context(), "acme", "none", "x"), pipeline.ErrNotFound)
	mustCreatePipeline(t, s, "acme", "app")
	wantErr(t, s.PutSecret(t.Context(), "acme", "app", pipeline.SecretSet{Name: "a/b"}), pipeline.ErrInvalid)
	list, err := s.ListSecrets(t.Context(), "acme", "app")
	if err != nil || len(list) != 0 {
		t.Errorf("ListSecrets of a pipeline without secrets = %v, %v; want empty", list, err)
	}
}

func TestUserRoundTripKeepsTokens(t *testing.T) {
	s := newStore(t)
	in := pipeline.User{
		ID: "github|1001", Login: "octocat", Updated: 5,
		Token: pipeline.ForgeToken{AccessToken: "gho_ACCESS", RefreshToken: "ghr_REFRESH", Expiry: time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC), Expired: true},
	}
	requireAllFieldsSet(t, in)
	if err := s.PutUser(t.Context(), in); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetUser(t.Context(), "github|1001")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(in, got); diff != "" {
		t.Errorf("GetUser (-want +got):\n%s", diff)
	}
	in.Login, in.Token = "renamed", pipeline.ForgeToken{AccessToken: "gho_NEW"}
	if err := s.PutUser(t.Context(), in); err != nil {
		t.Fatal(err)
	}
	if got, err = s.GetUser(t.Context(), "github|1001"); err != nil || got.Login != "renamed" || got.Token.AccessToken != "gho_NEW" || got.Token.RefreshToken != "" {
		t.Errorf("after replace: %+v, %v", got, err)
	}
	_, err = s.GetUser(t.Context(), "github|2")
	wantErr(t, err, pipeline.ErrNotFound)
	wantErr(t, s.PutUser(t.Context(), pipeline.User{}), pipeline.ErrInvalid)
}

func TestSecretMaterialIsNeverPlaintextInEtcd(t *testing.T) {
	s := newStore(t)
	cli := sharedClient(t)
	plaintexts := []string{"whsec-PLAINTEXT-1", "PLAINTEXT-2", "gho_PLAINTEXT-3", "ghr_PLAINTEXT-4", "PLAINTEXT-5-value"}

	if _, err := s.CreatePipeline(t.Context(), fullPipeline()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdatePipeline(t.Context(), "acme", "rocket", func(p *pipeline.Pipeline) error {
		p.WebhookSecret = "whsec-PLAINTEXT-1-rotated"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutUser(t.Context(), pipeline.User{ID: "github|1", Login: "u",
		Token: pipeline.ForgeToken{AccessToken: "gho_PLAINTEXT-3", RefreshToken: "ghr_PLAINTEXT-4"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutSecret(t.Context(), "acme", "rocket", pipeline.SecretSet{Name: "creds", Data: map[string]string{"API_TOKEN": "PLAINTEXT-5-value"}}); err != nil {
		t.Fatal(err)
	}
	raw := rawValues(t, cli, prefixOf(t))
	if len(raw) < 3 {
		t.Fatalf("only %d keys stored: the scan would prove nothing", len(raw))
	}
	for key, value := range raw {
		for _, p := range plaintexts {
			if strings.Contains(value, p) {
				t.Errorf("value of %s contains the plaintext %q", key, p)
			}
		}
	}
	// And the store still reads them back.
	p, err := s.GetPipeline(t.Context(), "acme", "rocket")
	if err != nil || p.WebhookSecret != "whsec-PLAINTEXT-1-rotated" || p.DeployKeyPrivate != fullPipeline().DeployKeyPrivate {
		t.Errorf("GetPipeline after sealing: %v (secrets match: %v)", err, p.WebhookSecret == "whsec-PLAINTEXT-1-rotated")
	}
}

func TestSealedValuesOpenOnlyInTheirOwnRecordAndKey(t *testing.T) {
	s := newStore(t)
	cli := sharedClient(t)
	mustCreatePipeline(t, s, "acme", "victim")
	if _, err := s.CreatePipeline(t.Context(), fullPipeline()); err != nil { // acme/rocket
		t.Fatal(err)
	}
	// Copy rocket's document (and its sealed secrets) over victim's.
	raw := rawValues(t, cli, prefixOf(t))
	if _, err := cli.Put(t.Context(), prefixOf(t)+"pipelines/acme/victim", raw[prefixOf(t)+"pipelines/acme/rocket"]); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetPipeline(t.Context(), "acme", "victim"); !errors.Is(err, secretbox.ErrOpen) {
		t.Errorf("GetPipeline of a record holding another record's ciphertext = %v, want ErrOpen", err)
	}

	other, err := secretbox.New(bytes.Repeat([]byte("o"), 32))
	if err != nil {
		t.Fatal(err)
	}
	wrongKey := etcdstore.New(cli, other, etcdstore.Options{Prefix: prefixOf(t)})
	_, err = wrongKey.GetPipeline(t.Context(), "acme", "rocket")
	if !errors.Is(err, secretbox.ErrOpen) {
		t.Errorf("GetPipeline with another secret = %v, want ErrOpen", err)
	}
	if err != nil && strings.Contains(err.Error(), "PLAINTEXT") {
		t.Errorf("error leaks a secret: %v", err)
	}
}
