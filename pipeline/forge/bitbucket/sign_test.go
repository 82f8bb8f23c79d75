package bitbucket_test

import "github.com/kontinuous/kontinuous/pipeline/pipelinetest/fakebitbucket"

func sign(secret string, body []byte) string { return fakebitbucket.Sign(secret, body) }
