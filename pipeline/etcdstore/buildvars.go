package etcdstore

import (
	"maps"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// commonVars returns the vars every stage has with the same value (the
// template's vars, which each stage's Vars repeats): a build record keeps
// them once, beside each stage's own, so that a large var does not count
// once per stage against etcd's request size limit.
func commonVars(stages []stageRecord) map[string]string {
	if len(stages) == 0 {
		return nil
	}
	var common map[string]string
	for k, v := range stages[0].Vars {
		same := true
		for _, st := range stages[1:] {
			if w, ok := st.Vars[k]; !ok || w != v {
				same = false
				break
			}
		}
		if same {
			if common == nil {
				common = map[string]string{}
			}
			common[k] = v
		}
	}
	return common
}

// shareVars moves the vars all of r's stages have in common to r.Vars.
func shareVars(r *buildRecord) {
	common := commonVars(r.Stages)
	if len(common) == 0 {
		return
	}
	r.Vars = common
	for i := range r.Stages {
		own := map[string]string{}
		for k, v := range r.Stages[i].Vars {
			if _, ok := common[k]; !ok {
				own[k] = v
			}
		}
		r.Stages[i].Vars = own
	}
}

// stageVars returns a stage's vars from its record: the build's shared
// vars and the stage's own. Records written before vars were shared have
// none shared and every var in the stage.
func stageVars(shared, own map[string]string) map[string]string {
	if len(shared) == 0 {
		return own
	}
	out := make(map[string]string, len(shared)+len(own))
	maps.Copy(out, shared)
	maps.Copy(out, own)
	return out
}

// isMessageTooLarge reports whether err is gRPC refusing a message over
// its size limit ("trying to send message larger than max" on the client,
// "received message larger than max" from the server): a request that can
// never succeed, unlike ResourceExhausted for too many requests.
func isMessageTooLarge(err error) bool {
	st, ok := status.FromError(err)
	return ok && st.Code() == codes.ResourceExhausted && strings.Contains(st.Message(), "larger than max")
}
