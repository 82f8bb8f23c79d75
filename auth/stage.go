package auth

import (
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/kontinuous/kontinuous/pipeline"
)

// stageTyp is the JOSE header typ of stage tokens (RFC 8725 §3.11), so
// that no user-token verifier can mistake one for a user token.
const stageTyp = "kontinuous-stage+jwt"

// stageAudience is the aud of stage tokens.
const stageAudience = "kontinuous-stage"

// StageTokens mints and checks the per-stage tokens build agents use to
// post status updates for exactly one stage of one build. They are HS256
// with a key derived from the shared secret for this purpose only, typed
// "stage", and short-lived; user tokens never verify as stage tokens nor
// the reverse.
type StageTokens struct {
	key []byte
}

// NewStageTokens derives the stage-token key from the decoded AUTH_SECRET.
func NewStageTokens(secret []byte) (*StageTokens, error) {
	k, err := deriveKey(secret, infoStage)
	if err != nil {
		return nil, err
	}
	return &StageTokens{key: k}, nil
}

// IssueStage returns a token valid for ttl that authorizes status updates
// of stage (its index) of build number build of pipeline pipelineKey
// (pipeline.Key(owner, repo)).
func (s *StageTokens) IssueStage(pipelineKey string, build, stage int, ttl time.Duration) (string, error) {
	if ttl <= 0 {
		return "", fmt.Errorf("auth: stage token ttl %s is not positive", ttl)
	}
	now := time.Now().Truncate(time.Second)
	t := jwt.NewWithClaims(jwt.SigningMethodHS256, stageClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    IssuerName,
			Audience:  jwt.ClaimStrings{stageAudience},
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
			ID:        randomID(),
		},
		Typ:      typStage,
		Pipeline: pipelineKey,
		Build:    build,
		Stage:    stage,
	})
	t.Header["typ"] = stageTyp
	raw, err := t.SignedString(s.key)
	if err != nil {
		return "", fmt.Errorf("auth: sign stage token: %w", err)
	}
	return raw, nil
}

// VerifyStage checks that raw is a valid, unexpired stage token for
// exactly this pipeline, build and stage. Errors wrap
// pipeline.ErrUnauthorized.
func (s *StageTokens) VerifyStage(raw, pipelineKey string, build, stage int) error {
	if raw == "" || len(raw) > maxTokenLen {
		return unauthorized("missing or oversized stage token")
	}
	var c stageClaims
	_, err := jwt.NewParser(
		jwt.WithValidMethods([]string{algHS256}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(DefaultLeeway),
		jwt.WithIssuer(IssuerName),
		jwt.WithAudience(stageAudience),
		jwt.WithStrictDecoding(),
	).ParseWithClaims(raw, &c, func(t *jwt.Token) (any, error) {
		if typ, _ := t.Header["typ"].(string); typ != stageTyp {
			return nil, fmt.Errorf("header typ %q is not %q", typ, stageTyp)
		}
		return s.key, nil
	})
	if err != nil {
		return fmt.Errorf("%w: %v", unauthorized("invalid stage token"), err)
	}
	if c.Typ != typStage || c.Pipeline != pipelineKey || c.Build != build || c.Stage != stage {
		return pipeline.Errorf(pipeline.ErrUnauthorized, "stage token is for another stage")
	}
	return nil
}
